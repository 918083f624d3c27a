"""The `medveil` command line: parse, call one library function, print.

User errors (every :class:`MedveilError`) become one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medveil.errors import ConfigError, MedveilError

app = typer.Typer(help="Privacy-preserving deep learning on medical images.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect bundled and user data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
ckks_app = typer.Typer(help="CKKS encrypted inference: owner and processor steps.",
                       no_args_is_help=True)
app.add_typer(ckks_app, name="ckks")
out = Console()

Size = Annotated[int | None, typer.Option(help="Working size: resize images to SIZE x SIZE.")]
Seed = Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")]
Color = Annotated[str, typer.Option(help="gray, rgb or green (colour images).")]


def _read_options(size: int | None, color: str, window: str = "minmax", axis: int = 2,
                  seed: int = 0) -> dict[str, Any]:
    return {"size": size, "color": color, "window": window, "axis": axis, "seed": seed}


def _params(values: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            raise ConfigError(f"--param '{item}' must look like NAME=VALUE")
        name, raw = item.split("=", 1)
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


def _load_key(path: Path | None):
    from medveil.keys import Key

    return None if path is None else Key.load(path)


@data_app.command("list")
def data_list() -> None:
    """Name the data sets bundled with medveil."""
    from medveil.data.bundled import BUNDLED

    table = Table("name", "task", "what", "attribution")
    for entry in BUNDLED.values():
        table.add_row(entry.name, entry.task, entry.description, entry.attribution)
    out.print(table)


@data_app.command("show")
def data_show(
    source: Annotated[str, typer.Argument(help="Bundled set name, path, or protected store.")],
    grid: Annotated[Path | None, typer.Option(help="Write a PNG grid of sample images.")] = None,
    size: Size = None, color: Color = "gray",
    window: Annotated[str, typer.Option(help="DICOM window: minmax or voi.")] = "minmax",
    axis: Annotated[int, typer.Option(help="NIfTI slicing axis.")] = 2,
    seed: Seed = 0,
) -> None:
    """Counts per split and class, image size, value range; optionally a sample grid."""
    from medveil.pictures import save_dataset_grid
    from medveil.sources import load_source

    imageset = load_source(source, **_read_options(size, color, window, axis, seed))
    info = imageset.describe()
    out.print(f"[bold]{info['name']}[/bold]  ({info['reader']}, {info['task']})  "
              f"source: {info['source']}")
    c, h, w = info["image_shape"]
    low, high = info["value_range"]
    out.print(f"{info['n']} images, {h}x{w}, {c} channel(s), values in [{low:.3f}, {high:.3f}]")
    table = Table("split", "images", "classes / foreground")
    for split, entry in info["splits"].items():
        detail = entry.get("classes") or (f"{entry['foreground_fraction']:.3%} foreground"
                                          if "foreground_fraction" in entry else "")
        table.add_row(split, str(entry["n"]), str(detail))
    out.print(table)
    if grid is not None:
        save_dataset_grid(grid, imageset, seed=seed)
        out.print(f"grid written to {grid}")


@app.command()
def keygen(
    path: Annotated[Path, typer.Argument(help="Where to write the new key file (mode 0600).")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing key file.")] = False,
) -> None:
    """Write a new secret key; prints only its fingerprint."""
    from medveil.keys import Key

    key = Key.generate()
    key.save(path, force=force)
    out.print(f"key written to {path} (mode 0600), fingerprint {key.fingerprint}")


@app.command()
def schemes() -> None:
    """List the registered protection schemes."""
    from medveil.schemes import available_schemes, get_scheme_class

    table = Table("scheme", "invertible", "keyed", "needs fit", "task runs on", "note")
    for name in available_schemes():
        cls = get_scheme_class(name)
        table.add_row(name, str(cls.invertible), str(cls.keyed), str(cls.needs_fit),
                      cls.utility_path, "weak reference (tests)" if cls.reference_only else "")
    out.print(table)


@app.command()
def protect(
    scheme: Annotated[str, typer.Option(help="Scheme name (see `medveil schemes`).")],
    key: Annotated[Path, typer.Option(help="The owner's key file.")],
    data: Annotated[str, typer.Option(help="Bundled set name or path.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Store folder to create.")],
    param: Annotated[list[str] | None, typer.Option(help="Scheme parameter NAME=VALUE.")] = None,
    size: Size = None, color: Color = "gray", seed: Seed = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
) -> None:
    """Fit a scheme on the training split and write the protected store."""
    from medveil.data import load_dataset
    from medveil.protect import protect_dataset

    owner_key = _load_key(key)
    imageset = load_dataset(data, **_read_options(size, color, seed=seed))
    summary = protect_dataset(imageset, scheme=scheme, key=owner_key, out=out_dir, seed=seed,
                              params=_params(param), force=force)
    counts = ", ".join(f"{s} {n}" for s, n in summary["splits"].items())
    out.print(f"protected {imageset.name} with {summary['scheme']} into {summary['store']} "
              f"({counts}); key fingerprint {summary['key_fingerprint']}")


@app.command()
def verify(
    store: Annotated[Path, typer.Argument(help="A protected store folder.")],
    key: Annotated[Path | None, typer.Option(help="Also check the key and manifest HMAC.")] = None,
) -> None:
    """Re-hash every shard of a store; fail on any tampering."""
    from medveil.store import verify_store

    summary = verify_store(store, key=_load_key(key))
    counts = ", ".join(f"{s} {v['count']}" for s, v in summary["splits"].items())
    out.print(f"OK: {summary['path']}: scheme {summary['scheme']['name']}, {summary['shards']} "
              f"shards, {counts}" + ("; key and HMAC checked" if summary["hmac_checked"] else ""))


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Bundled set, path, or protected store.")],
    model_out: Annotated[Path, typer.Option("--out", help="Model file to write.")],
    key: Annotated[Path | None, typer.Option(help="Key to check a store against.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Classifier epochs.")] = None,
    steps: Annotated[int | None, typer.Option(help="Segmenter training steps.")] = None,
    size: Size = None, color: Color = "gray", seed: Seed = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train the standard classifier or U-Net on the train split (val selects the epoch)."""
    from medveil.sources import load_source
    from medveil.tasks import train_model

    imageset = load_source(data, key=_load_key(key), **_read_options(size, color, seed=seed))
    model = train_model(imageset, seed=seed, epochs=epochs, steps=steps, progress=not quiet)
    model.save(model_out)
    out.print(f"{model.task} model trained in {model.train_s:.1f}s, written to {model_out}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Model file from `medveil train`.")],
    data: Annotated[str, typer.Option(help="Bundled set, path, or protected store.")],
    split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test",
    key: Annotated[Path | None, typer.Option(help="Key to check a store against.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics JSON.")] = None,
    size: Size = None, color: Color = "gray", seed: Seed = 0,
) -> None:
    """Metrics of a trained model on a split (accuracy/AUC/F1/MCC or Dice/IoU)."""
    from medveil.atomic import atomic_write_bytes
    from medveil.sources import load_source
    from medveil.tasks import TrainedModel, evaluate_model

    trained = TrainedModel.load(model)
    imageset = load_source(data, key=_load_key(key), **_read_options(size, color, seed=seed))
    metrics = evaluate_model(trained, imageset, split=split)
    table = Table("metric", "value")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    out.print(f"{trained.task} on {imageset.name} [{split}]")
    out.print(table)
    if json_out is not None:
        record = {"model": str(model), "data": imageset.name, "split": split, **metrics}
        atomic_write_bytes(json_out, (json.dumps(record, indent=2) + "\n").encode())


@app.command()
def bench(
    data: Annotated[str | None, typer.Option(help="Bundled set or path (default: cxr-demo).")] =
        None,
    scheme_list: Annotated[str, typer.Option("--schemes", help="all, or a comma list.")] = "all",
    quick: Annotated[bool, typer.Option(help="Small subsets and budgets, for a first look.")] =
        False,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for scorecard and report.")] =
        Path("bench-output"),
    size: Size = None, color: Color = "gray", seed: Seed = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    resume: Annotated[bool, typer.Option(
        help="Keep the finished rows of an interrupted run into the same --out.")] = False,
) -> None:
    """Every scheme, the same data, the same attacks: a privacy / utility / cost scorecard."""
    from medveil.bench import run_bench
    from medveil.report import HEADLINE, strongest_attack

    options = {"size": size, "color": color}
    scorecard = run_bench(data=data, schemes=scheme_list, quick=quick, seed=seed, out=out_dir,
                          progress=not quiet, read_options=options, resume=resume)
    metric = HEADLINE[scorecard["dataset"]["task"]]
    table = Table("scheme", "status", metric, "strongest attack SSIM", "re-id top-1",
                  "recovery SSIM", "time s", title=f"{scorecard['dataset']['name']} "
                  f"({scorecard['mode']})")
    failed = []
    for row in scorecard["results"]:
        name, best = strongest_attack(row)
        reid = (row.get("attacks") or {}).get("reidentify")
        table.add_row(row["scheme"], row["status"],
                      f"{row['utility'][metric]:.3f}" if row.get("utility") else "-",
                      f"{best['ssim']:.3f} ({name})" if best else
                      ("n/a (ciphertext)" if row.get("attacks", {}).get("not_applicable") else "-"),
                      f"{reid['top1']:.2f}" if reid else "-",
                      f"{row['recovery']['ssim']:.3f}" if row.get("recovery") else "-",
                      f"{row.get('wall_s', 0):.0f}")
        if row["status"] != "ok":
            failed.append(f"{row['scheme']} ({row['error']})")
    out.print(table)
    out.print(f"scorecard and report written to {out_dir.resolve()} "
              f"(report.html, report.md, scorecard.json)")
    if failed:
        print(f"medveil: error: {len(failed)} scheme(s) failed: {'; '.join(failed)}; "
              f"tracebacks in {out_dir / 'errors.log'}", file=sys.stderr)
        raise typer.Exit(1)



# ----------------------------------------------------------------------------- ckks
@ckks_app.command("train")
def ckks_train(
    data: Annotated[str, typer.Option(help="Bundled set or path (labelled, grey).")],
    model_out: Annotated[Path, typer.Option("--out", help="HE model file to write.")],
    architecture: Annotated[str, typer.Option(help="auto, tutorial (28 px) or deep (64 px).")] =
        "auto",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 15,
    size: Size = None, seed: Seed = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Owner: train the HE-friendly CNN in plaintext, fold BN and activations, save it."""
    from medveil.data import load_dataset
    from medveil.he.workflow import train as train_he

    imageset = load_dataset(data, **_read_options(size, "gray", seed=seed))
    summary = train_he(imageset, model_out, architecture=architecture, epochs=epochs, seed=seed,
                       progress=not quiet)
    test = summary.get("plaintext_test")
    out.print(f"{summary['architecture']} HE model trained in {summary['train_s']:.1f}s, written "
              f"to {model_out}" + (f"; plaintext test AUC {test['auc']:.4f}" if test else ""))


@ckks_app.command("context")
def ckks_context(
    key: Annotated[Path, typer.Option(help="The owner's key file.")],
    model: Annotated[Path, typer.Option(help="HE model file.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the public context.")],
    force: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
) -> None:
    """Owner: export the processor's public context (no secret key)."""
    from medveil.he.model import HEModel
    from medveil.he.workflow import export_context

    path = export_context(_load_key(key), HEModel.load(model), out_dir, force=force)
    out.print(f"public context (public, relinearisation and rotation keys) written to {path}")


@ckks_app.command("encrypt")
def ckks_encrypt(
    key: Annotated[Path, typer.Option(help="The owner's key file.")],
    model: Annotated[Path, typer.Option(help="HE model file.")],
    data: Annotated[str, typer.Option(help="Bundled set or path.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the ciphertexts.")],
    split: Annotated[str, typer.Option(help="Split to encrypt.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Encrypt only the first N images.")] = None,
    size: Size = None, seed: Seed = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
) -> None:
    """Owner: pack and encrypt the images of a split."""
    from medveil.data import load_dataset
    from medveil.he.model import HEModel
    from medveil.he.workflow import encrypt_dataset

    imageset = load_dataset(data, **_read_options(size, "gray", seed=seed))
    if split not in imageset.split_names:
        raise ConfigError(f"{imageset.name} has no split '{split}'; it has "
                          f"{', '.join(imageset.split_names)}")
    images = imageset.split(split).images[:limit]
    summary = encrypt_dataset(images, _load_key(key), HEModel.load(model), out_dir, force=force,
                              source=f"{imageset.name}:{split}")
    out.print(f"encrypted {summary['images']} images into {out_dir} "
              f"({summary['bytes_per_image'] / 1e3:.0f} kB and {summary['ms_per_image']:.0f} ms "
              "per image)")


@ckks_app.command("run")
def ckks_run(
    context: Annotated[Path, typer.Option(help="Public context folder from the owner.")],
    model: Annotated[Path, typer.Option(help="HE model file.")],
    inputs: Annotated[Path, typer.Option("--input", help="Encrypted images folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the encrypted logits.")],
    encrypted_model: Annotated[bool, typer.Option(help="Encrypt the weights too.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
) -> None:
    """Processor: evaluate the model on encrypted images (public context only)."""
    from medveil.he.model import HEModel
    from medveil.he.workflow import run_encrypted

    summary = run_encrypted(context, HEModel.load(model), inputs, out_dir,
                            encrypted_model=encrypted_model, force=force)
    out.print(f"evaluated {summary['images']} encrypted images in {summary['ms_per_image']:.0f} "
              f"ms each ({'encrypted' if encrypted_model else 'plain'} model); "
              f"results in {out_dir}")


@ckks_app.command("decrypt")
def ckks_decrypt(
    key: Annotated[Path, typer.Option(help="The owner's key file.")],
    model: Annotated[Path, typer.Option(help="HE model file.")],
    results: Annotated[Path, typer.Option(help="Encrypted logits folder from `ckks run`.")],
    csv_out: Annotated[Path, typer.Option("--out", help="CSV of logits and predictions.")],
    data: Annotated[str | None, typer.Option(help="Score against this set's labels.")] = None,
    split: Annotated[str, typer.Option(help="The split that was encrypted.")] = "test",
    size: Size = None, seed: Seed = 0,
) -> None:
    """Owner: decrypt the logits; optionally score them against the labels."""
    from medveil.atomic import atomic_write_bytes
    from medveil.he.model import HEModel
    from medveil.he.workflow import decrypt_results

    logits = decrypt_results(_load_key(key), HEModel.load(model), results)
    lines = ["index," + ",".join(f"logit_{k}" for k in range(logits.shape[1])) + ",predicted"]
    lines += [f"{i}," + ",".join(f"{v:.6f}" for v in row) + f",{int(row.argmax())}"
              for i, row in enumerate(logits)]
    atomic_write_bytes(csv_out, ("\n".join(lines) + "\n").encode())
    out.print(f"decrypted {len(logits)} results into {csv_out}")
    if data is not None:
        from medveil.data import load_dataset
        from medveil.metrics import classification_metrics, probabilities_from_logits

        labels = load_dataset(data, **_read_options(size, "gray", seed=seed)).split(split).labels
        if len(labels) < len(logits):
            raise ConfigError(f"{data} [{split}] has {len(labels)} labels for {len(logits)} "
                              "results; pass the set and split that were encrypted")
        metrics = classification_metrics(probabilities_from_logits(logits), labels[:len(logits)])
        out.print(" ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def main() -> None:
    """Console entry point: user errors are one line on stderr and exit code 2."""
    try:
        app()
    except MedveilError as exc:
        message = " ".join(str(exc).split())
        print(f"medveil: error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("medveil: interrupted; no output was left half-written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
