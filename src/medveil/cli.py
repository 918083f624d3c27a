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

from medveil import limits
from medveil.data.sizes import MIN_IMAGE_SIZE, MIN_SEGMENTATION_SIZE
from medveil.errors import ConfigError, MedveilError

app = typer.Typer(help="Privacy-preserving deep learning on medical images.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect bundled and user data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console()

Size = Annotated[int | None, typer.Option(
    min=MIN_IMAGE_SIZE, max=4096,
    help=f"Working size: resize images to SIZE x SIZE ({MIN_IMAGE_SIZE} to 4096; "
         f"{MIN_SEGMENTATION_SIZE} or more for images with masks).")]
Seed = Annotated[int, typer.Option(
    min=0, max=2**32 - 1, help="Seed for splits, initialisation and shuffling (0 to 2^32-1).")]
Color = Annotated[str, typer.Option(help="gray, rgb or green (colour images).")]
Masks = Annotated[str | None, typer.Option(
    help="Segmentation: the annotation folder's name or a file pattern ('*_1stHO.png'), "
         "where the layout offers several.")]
Label = Annotated[str | None, typer.Option(
    help="The data set's name in what leaves you (default: a digest of the pixels; file "
         "and folder names are never written).")]


def _read_options(size: int | None, color: str, window: str = "minmax", axis: int = 2,
                  seed: int = 0, masks: str | None = None, label: str | None = None
                  ) -> dict[str, Any]:
    from medveil.data.readers import COLOR_MODES, WINDOW_MODES, check_label, look_up_option

    look_up_option(color, COLOR_MODES, what="colour mode (--color)")
    look_up_option(window, WINDOW_MODES, what="DICOM window (--window)")
    if label is not None:
        check_label(label)
    return {"size": size, "color": color, "window": window, "axis": axis, "seed": seed,
            "masks": masks, "label": label}


def _metrics_json(record: dict[str, Any]) -> bytes:
    return (json.dumps({"format": "medveil.metrics/1", **record}, indent=2) + "\n").encode()


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
    axis: Annotated[int, typer.Option(min=0, max=2, help="NIfTI slicing axis.")] = 2,
    seed: Seed = 0, masks: Masks = None,
    force: Annotated[bool, typer.Option(help="Replace an existing grid picture.")] = False,
) -> None:
    """Counts per split and class, image size, value range; optionally a sample grid."""
    from medveil.atomic import check_output
    from medveil.pictures import save_dataset_grid
    from medveil.sources import load_source

    if grid is not None:
        check_output(grid, force=force, option="--grid")
    imageset = load_source(source, **_read_options(size, color, window, axis, seed, masks))
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

    table = Table("scheme", "invertible", "keyed", "owner state", "protocol", "note")
    for name in available_schemes():
        cls = get_scheme_class(name)
        table.add_row(name, str(cls.invertible), str(cls.keyed), str(cls.needs_fit),
                      cls.protocol, "weak reference (tests)" if cls.reference_only else "")
    out.print(table)


Budget = Annotated[str, typer.Option(
    help="Named budget: full, quick (the bench's --quick), demo (make demo) or smoke "
         "(seconds, for tests).")]


@app.command()
def protect(
    scheme: Annotated[str, typer.Option(help="Scheme name (see `medveil schemes`).")],
    key: Annotated[Path, typer.Option(help="The owner's key file.")],
    data: Annotated[str, typer.Option(help="Bundled set name or path.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Release folder to create (leaves).")],
    state: Annotated[Path | None, typer.Option(
        help="Owner-state folder to create (stays; 0700). Required where the scheme fits "
             "anything.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Scheme parameter NAME=VALUE.")] = None,
    budget: Budget = "full",
    size: Size = None, color: Color = "gray", seed: Seed = 0, masks: Masks = None,
    label: Label = None,
    public: Annotated[str | None, typer.Option(
        help="Images that are not your patients (a public or consented set), for schemes "
             "that take them (fesf's hosts): a split of --data or a data set.")] = None,
    class_names: Annotated[str | None, typer.Option(
        help="Class names the release carries: 'index' (class_0, class_1, ...; the real "
             "names stay in the owner state) or a comma list, one per label value. Default: "
             "the data set's names (folder names, which may identify patients).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing release / state.")] = False,
) -> None:
    """Owner: fit a scheme on the training split; write the release and the owner state."""
    from medveil.data import load_dataset
    from medveil.workflow import protect_dataset

    owner_key = _load_key(key)
    imageset = load_dataset(data, **_read_options(size, color, seed=seed, masks=masks,
                                                  label=label))
    summary = protect_dataset(imageset, scheme=scheme, key=owner_key, out=out_dir, state=state,
                              seed=seed, params=_params(param), budget=budget, force=force,
                              public=public, class_names=class_names)
    counts = ", ".join(f"{s} {n}" for s, n in summary["splits"].items())
    out.print(f"protected {imageset.name} with {summary['scheme']} ({summary['protocol']}) "
              f"into {summary['store']} ({counts}); key fingerprint "
              f"{summary['key_fingerprint']}")
    if summary["state"]:
        out.print(f"owner state in {summary['state']} (keep it with the key; never send it to "
                  "the processor)")


@app.command()
def verify(
    store: Annotated[Path, typer.Argument(help="A release folder.")],
    key: Annotated[Path | None, typer.Option(help="Also check the key and manifest HMAC.")] = None,
) -> None:
    """Re-hash every shard of a release; fail on any tampering."""
    from medveil.store import verify_store

    summary = verify_store(store, key=_load_key(key))
    counts = ", ".join(f"{s} {v['count']}" for s, v in summary["splits"].items())
    out.print(f"OK: {summary['path']}: scheme {summary['scheme']['name']}, {summary['shards']} "
              f"shards, {counts}")
    if summary["authenticated"]:
        out.print("integrity and authenticity checked: every shard matches the manifest, and "
                  "the manifest carries this key's fingerprint and a valid HMAC")
    else:
        out.print("integrity checked (every listed shard matches the manifest, nothing "
                  "unlisted); authenticity NOT checked: anyone can write a consistent "
                  "manifest. Pass --key to check that the owner's key made it")


Epochs = Annotated[int | None, typer.Option(
    min=1, max=limits.MAX_EPOCHS, help=f"Classifier epochs (1 to {limits.MAX_EPOCHS}).")]
Steps = Annotated[int | None, typer.Option(
    min=1, max=limits.MAX_STEPS, help=f"Segmenter training steps (1 to {limits.MAX_STEPS}).")]


@app.command()
def train(
    data: Annotated[list[str], typer.Option(
        help="Release (repeat for several centres: one pooled model), or a plaintext set "
             "(a key holder's recovered npz).")],
    model_out: Annotated[Path, typer.Option("--out", help="Model file to write.")],
    budget: Budget = "full",
    epochs: Epochs = None,
    steps: Steps = None,
    size: Size = None, color: Color = "gray", seed: Seed = 0, masks: Masks = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing model file.")] = False,
) -> None:
    """Processor: train what the releases' protocol trains (no key, no owner state)."""
    from medveil.workflow import train as train_releases

    limits.check_train_options(budget=budget, seed=seed, epochs=epochs, steps=steps)
    summary = train_releases(data, out=model_out, budget=budget, seed=seed, epochs=epochs,
                             steps=steps, progress=not quiet, force=force,
                             read_options=_read_options(size, color, seed=seed, masks=masks))
    out.print(f"{summary['task']} model ({summary['protocol']}) trained in "
              f"{summary['train_s']:.1f}s on {len(data)} source(s), written to {model_out}")


@app.command()
def predict(
    data: Annotated[str, typer.Option(help="Release (or a key holder's recovered set).")],
    results_out: Annotated[Path, typer.Option("--out", help="Results folder to create.")],
    model: Annotated[Path | None, typer.Option(
        help="Model file from `medveil train` (ckks: none, the release carries it).")] = None,
    split: Annotated[str, typer.Option(help="Split to predict on.")] = "test",
    size: Size = None, color: Color = "gray", seed: Seed = 0, masks: Masks = None,
    force: Annotated[bool, typer.Option(help="Replace an existing results folder.")] = False,
) -> None:
    """Processor: predictions, encoded masks or encrypted logits on a release's split."""
    from medveil.workflow import predict as predict_release

    summary = predict_release(model, data, split=split, out=results_out, force=force,
                              read_options=_read_options(size, color, seed=seed, masks=masks))
    out.print(f"{summary['images']} {split} results ({summary['protocol']}, "
              f"{summary['ms_per_image']:.0f} ms per image) written to {results_out}")


@app.command()
def decode(
    results: Annotated[Path, typer.Option(help="Results folder from `medveil predict`.")],
    decoded_out: Annotated[Path, typer.Option(
        "--out", help="Predictions CSV (classification) or mask PNG folder (segmentation).")],
    key: Annotated[Path | None, typer.Option(help="The owner's key file.")] = None,
    state: Annotated[Path | None, typer.Option(help="The owner-state folder.")] = None,
    data: Annotated[str | None, typer.Option(
        help="The owner's data set the release was made from: score against its truth.")] =
        None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics JSON.")] = None,
    size: Size = None, color: Color = "gray", seed: Seed = 0, masks: Masks = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Owner: the processor's results -> predictions; with --data, metrics."""
    from medveil.atomic import atomic_write_bytes, check_output
    from medveil.workflow import decode_results

    if json_out is not None:
        check_output(json_out, force=force, inputs=(results, state), option="--json")
    truth = None
    if data is not None:
        from medveil.data import load_dataset

        truth = load_dataset(data, **_read_options(size, color, seed=seed, masks=masks))
    summary = decode_results(results, key=_load_key(key), state=state, out=decoded_out,
                             truth=truth, force=force)
    out.print(f"decoded {summary['images']} {summary['task']} results into {decoded_out}")
    metrics = summary.get("metrics")
    if metrics:
        out.print(" ".join(f"{k} {v:.6f}" for k, v in metrics.items()))
        if json_out is not None:
            atomic_write_bytes(json_out, _metrics_json(metrics), force=force, option="--json")


@app.command()
def recover(
    key: Annotated[Path, typer.Option(help="The owner's key file (key holders get it).")],
    data: Annotated[Path, typer.Option(help="The release.")],
    recovered_out: Annotated[Path, typer.Option(
        "--out", help="An .npz (MedMNIST layout) or a folder of PNGs to create.")],
    state: Annotated[Path | None, typer.Option(help="The owner-state folder.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Key holder: the images back from a release (invertible schemes)."""
    from medveil.workflow import recover_release

    summary = recover_release(data, key=_load_key(key), state=state, out=recovered_out,
                              force=force)
    counts = ", ".join(f"{s} {n}" for s, n in summary["splits"].items())
    out.print(f"recovered {summary['scheme']} images ({counts}) into {recovered_out} "
              "(owner-only: these are patient images)")


@app.command()
def multicentre(
    data: Annotated[str, typer.Option(help="Bundled set or path, dealt to the centres.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the table and record.")],
    centres: Annotated[int, typer.Option(min=1, max=64, help="Number of centres.")] = 2,
    scheme: Annotated[str, typer.Option(help="Scheme every centre uses.")] = "privacy_sf",
    param: Annotated[list[str] | None, typer.Option(help="Scheme parameter NAME=VALUE.")] = None,
    budget: Budget = "quick",
    size: Size = None, color: Color = "gray", seed: Seed = 0, masks: Masks = None,
    label: Label = None,
    force: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
) -> None:
    """Several centres, one processor: the pooled model against each centre alone."""
    from medveil.atomic import check_output
    from medveil.data import load_dataset
    from medveil.workflow import multicentre_table, run_multicentre, write_multicentre

    check_output(out_dir, force=force, inputs=(data,))
    imageset = load_dataset(data, **_read_options(size, color, seed=seed, masks=masks,
                                                  label=label))
    record = run_multicentre(imageset, centres=centres, scheme=scheme, budget=budget,
                             seed=seed, params=_params(param))
    write_multicentre(record, out_dir, force=force)
    out.print(multicentre_table(record))
    out.print(f"written to {out_dir / 'multicentre.md'} and {out_dir / 'multicentre.json'}")


@app.command("federated-app")
def federated_app(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the Flower App.")],
    centres: Annotated[int, typer.Option(min=1, max=64,
                                         help="SuperNodes the aggregator waits for.")] = 3,
    param: Annotated[list[str] | None, typer.Option(
        help="A `federated` scheme parameter NAME=VALUE (rounds, noise, epsilon, ...).")
    ] = None,
    model_out: Annotated[str, typer.Option(
        help="Folder, on the SuperLink's machine, for the checkpoint and the global "
             "model (a run with the same folder resumes).")] = "federated-run",
    seed: Seed = 0,
    force: Annotated[bool, typer.Option(help="Replace an App folder medveil wrote.")] = False,
) -> None:
    """Aggregator: write the Flower App folder for `flwr run` (docs/federated.md)."""
    from medveil.federated.app_folder import write_flower_app

    config = {**_params(param), "centres": centres, "seed": seed, "out": model_out}
    folder = write_flower_app(out_dir, run_config=config, force=force)
    out.print(f"Flower App written to {folder}; run it with `flwr run {folder} <superlink>`")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Model file from `medveil train`.")],
    data: Annotated[str, typer.Option(help="Bundled set, path, or protected store.")],
    split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test",
    key: Annotated[Path | None, typer.Option(help="Key to check a store against.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics JSON.")] = None,
    size: Size = None, color: Color = "gray", seed: Seed = 0, masks: Masks = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --json file.")] = False,
) -> None:
    """Metrics of a trained model on a split (accuracy/AUC/F1/MCC or Dice/IoU)."""
    from medveil.atomic import atomic_write_bytes, check_output
    from medveil.sources import load_source
    from medveil.tasks import TrainedModel, evaluate_model

    if json_out is not None:
        check_output(json_out, force=force, inputs=(model, data), option="--json")
    trained = TrainedModel.load(model)
    imageset = load_source(data, key=_load_key(key), **_read_options(size, color, seed=seed,
                                                                      masks=masks))
    metrics = evaluate_model(trained, imageset, split=split)
    table = Table("metric", "value")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    out.print(f"{trained.task} on {imageset.name} [{split}]")
    out.print(table)
    if json_out is not None:
        record = {"data": imageset.name, "split": split, **metrics}
        atomic_write_bytes(json_out, _metrics_json(record), force=force, option="--json")


@app.command()
def bench(
    data: Annotated[list[str] | None, typer.Option(
        help="Bundled set or path (default: cxr-demo); repeat it for a sweep over data "
             "sets.")] = None,
    scheme_list: Annotated[str, typer.Option("--schemes", help="all, or a comma list.")] = "all",
    quick: Annotated[bool, typer.Option(help="Small subsets and budgets, for a first look.")] =
        False,
    budget: Annotated[str | None, typer.Option(
        help="Named budget (full, quick, demo, smoke); --quick is --budget quick.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for scorecard and report.")] =
        Path("bench-output"),
    size: Size = None, color: Color = "gray", seed: Seed = 0, masks: Masks = None,
    label: Label = None,
    seeds: Annotated[str | None, typer.Option(
        help="A sweep over seeds, a comma list (0,1,2); each data set and seed gets a folder "
             "of its own under --out.")] = None,
    executor: Annotated[str, typer.Option(
        help="Where rows run: inprocess, processes (local workers) or ray "
             "(pip install 'medveil\\[cluster]').")] = "inprocess",
    workers: Annotated[int | None, typer.Option(
        min=1, help="Workers for --executor processes / ray (default: the cores).")] = None,
    cache: Annotated[Path | None, typer.Option(
        help="A cache folder (0700) for fitted schemes and rows, reused by later runs with "
             "the same inputs and code; delete it at will.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    resume: Annotated[bool, typer.Option(
        help="Keep the finished rows of an interrupted run into the same --out.")] = False,
    pictures: Annotated[bool, typer.Option(
        help="Put test images, views and recoveries in the report (--no-pictures: a report "
             "that holds no patient image).")] = True,
) -> None:
    """Every scheme, the same data, the same attacks: a privacy / utility / cost scorecard."""
    from medveil.bench import run_sweep

    options = _read_options(size, color, masks=masks, label=label)
    options = {k: options[k] for k in ("size", "color", "masks", "label")}
    scorecards = run_sweep(data=list(data or [None]), schemes=scheme_list, quick=quick,
                           seeds=_seed_list(seeds, seed), out=out_dir, progress=not quiet,
                           read_options=options, resume=resume, budget=budget,
                           pictures=pictures, executor=executor, workers=workers,
                           cache=cache)
    failed = []
    for scorecard in scorecards:
        failed += _print_scorecard(scorecard)
    folders = "; one folder per data set and seed" if len(scorecards) > 1 else ""
    out.print(f"scorecard and report written to {out_dir.resolve()} (report.html, report.md, "
              f"scorecard.json{folders})")
    if failed:
        print(f"medveil: error: {len(failed)} scheme(s) failed: {'; '.join(failed)}; "
              f"tracebacks in errors.log under {out_dir}", file=sys.stderr)
        raise typer.Exit(1)


def _seed_list(seeds: str | None, seed: int) -> list[int]:
    """``--seeds 0,1,2`` as integers (``--seed`` where it is not given)."""
    if seeds is None:
        return [seed]
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be a comma list of integers such as 0,1,2, "
                          f"got {seeds!r}") from None
    if not values or any(v < 0 or v >= 2**32 for v in values):
        raise ConfigError(f"--seeds must list integers from 0 to 2^32-1, got {seeds!r}")
    return values


def _print_scorecard(scorecard: dict) -> list[str]:
    """The scorecard's table; the rows that failed, as 'scheme (error)'."""
    from medveil.report import HEADLINE, strongest_attack

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
                      ("n/a" if row.get("attacks", {}).get("not_applicable") else "-"),
                      f"{reid['top1']:.2f}" if reid else "-",
                      f"{row['recovery']['ssim']:.3f}" if row.get("recovery") else "-",
                      f"{row.get('wall_s', 0):.0f}")
        if row["status"] != "ok":
            failed.append(f"{row['scheme']} ({row['error']})")
    out.print(table)
    return failed


serve_app = typer.Typer(help="The processor as an HTTP service (needs medveil\\[service]).")
app.add_typer(serve_app, name="serve")
remote_app = typer.Typer(help="A centre's side of `medveil serve`: push, train, predict, pull.",
                         no_args_is_help=True)
app.add_typer(remote_app, name="remote")
DataDir = Annotated[Path, typer.Option(help="The service's folder (database, releases, "
                                            "models, results; 0700): a new or empty folder, "
                                            "or one medveil made.")]
Server = Annotated[str, typer.Option(help="The service's URL, e.g. http://127.0.0.1:8000.")]
TokenFile = Annotated[Path, typer.Option(help="This centre's token file (0600).")]


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    data_dir: DataDir = Path("medveil-service"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="Largest release accepted.")] =
        2048,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Job processes (CPU-bound "
                                                            "jobs: 1).")] = 1,
    max_job_s: Annotated[int, typer.Option(
        min=1, help="A job running longer is stopped and marked failed (seconds).")] =
        limits.MAX_JOB_WALL_S,
) -> None:
    """Serve the processor's side of every protocol (no key, no owner state)."""
    if ctx.invoked_subcommand is not None:
        return
    from medveil.service.app import listen_socket, run_server
    from medveil.service.db import ServiceDB

    ServiceDB(data_dir)  # a folder medveil did not make is refused before anything is said
    sock = listen_socket(host, port)  # a port in use: one line, exit 2, nothing started
    out.print(f"medveil service on http://{host}:{port} (OpenAPI at /docs), data in {data_dir}")
    run_server(data_dir, host=host, port=port, max_upload_mb=max_upload_mb, workers=workers,
               max_job_s=max_job_s, sock=sock)


token_app = typer.Typer(help="Centres' bearer tokens.", no_args_is_help=True)
serve_app.add_typer(token_app, name="token")


@token_app.command("add")
def token_add(
    centre: Annotated[str, typer.Argument(help="The centre's name.")],
    data_dir: DataDir = Path("medveil-service"),
    token_out: Annotated[Path | None, typer.Option(
        "--out", help="Write the token to this file (0600) instead of printing it.")] = None,
) -> None:
    """A new token for CENTRE: shown (or written) once; the service keeps only its hash."""
    from medveil.atomic import atomic_write_bytes, check_output
    from medveil.service.db import ServiceDB

    if token_out is not None:
        check_output(token_out)
    token = ServiceDB(data_dir).add_centre(centre)
    if token_out is None:
        print(token)
    else:
        atomic_write_bytes(token_out, (token + "\n").encode())
        out.print(f"token for {centre} written to {token_out} (mode 0600)")


@remote_app.command("push")
def remote_push(server: Server, token_file: TokenFile,
                data: Annotated[Path, typer.Option(help="The release folder to upload.")],
                pooling: Annotated[bool, typer.Option(
                    help="Allow other centres' pooled models to train on it.")] = False,
                ) -> None:
    """Upload a release (verified here first, then by the service)."""
    from medveil.service.client import Remote

    answer = Remote(server, token_file).push(data, pooling=pooling)
    print(answer["id"])


@remote_app.command("train")
def remote_train(server: Server, token_file: TokenFile,
                 release: Annotated[list[str], typer.Option(
                     help="A release id (repeat: one pooled model).")],
                 budget: Budget = "full", seed: Seed = 0,
                 epochs: Epochs = None,
                 steps: Steps = None,
                 quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
                 ) -> None:
    """Train on the service; waits (progress on stderr) and prints the model id."""
    from medveil.service.client import Remote, wait_with_progress

    spec = limits.check_job_spec({"kind": "train", "releases": release, "budget": budget,
                                  "seed": seed, "epochs": epochs, "steps": steps})
    remote = Remote(server, token_file)
    job = remote.submit(spec.to_json())
    print(wait_with_progress(remote, job, show=not quiet)["output"])


@remote_app.command("predict")
def remote_predict(server: Server, token_file: TokenFile,
                   release: Annotated[str, typer.Option(help="The release id.")],
                   results_out: Annotated[Path, typer.Option("--out", help="Results folder.")],
                   model: Annotated[str | None, typer.Option(
                       help="Model id (ckks: none, the release carries it).")] = None,
                   split: Annotated[str, typer.Option(help="Split to predict on.")] = "test",
                   max_download_mb: Annotated[int, typer.Option(
                       min=1, max=1_048_576, help="Largest results set accepted from the "
                       "service (its files, in MiB): a bigger one is refused, nothing kept."
                   )] = limits.DEFAULT_MAX_DOWNLOAD_MB,
                   force: Annotated[bool, typer.Option(help="Replace an existing folder.")] =
                   False,
                   quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
                   ) -> None:
    """Predict on the service, wait, and pull the results (verified) into --out."""
    from medveil.atomic import check_output
    from medveil.service.client import Remote, wait_with_progress

    check_output(results_out, force=force)
    spec = limits.check_job_spec({"kind": "predict", "release": release, "model": model,
                                  "split": split})
    remote = Remote(server, token_file)
    job = remote.submit(spec.to_json())
    result_id = wait_with_progress(remote, job, show=not quiet)["output"]
    remote.pull(result_id, results_out, force=force, max_bytes=max_download_mb * 2**20)
    out.print(f"results {result_id} pulled into {results_out}")


@remote_app.command("status")
def remote_status(server: Server, token_file: TokenFile,
                  job: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """A job's status."""
    from medveil.service.client import Remote

    print(json.dumps(Remote(server, token_file).status(job)))


@remote_app.command("cancel")
def remote_cancel(server: Server, token_file: TokenFile,
                  job: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Remove a queued job, or stop a running one (nothing it made is kept)."""
    from medveil.service.client import Remote

    print(json.dumps(Remote(server, token_file).cancel(job)))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error_line(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or type(exc).__name__
    return (f"{where}: {reason}; check that the path exists, is the right kind (file or "
            "folder) and that you may read or write it")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every user-caused failure is one line on stderr, exit code 2.

    Usage errors (a missing or malformed option), medveil's own errors and operating-
    system errors on inputs and outputs all end the same way, never with a traceback;
    SIGTERM unwinds like Ctrl-C so that temporary outputs are removed.
    """
    import signal

    def _terminate(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        _run(argv)
    finally:
        # past the command, a SIGTERM (at interpreter exit, in atexit handlers) ends the
        # process the default way, never with an "Exception ignored in atexit" traceback
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(argv: list[str] | None) -> None:
    """The command, its failures mapped to one line and an exit code (see ``main``)."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="medveil")
    except MedveilError as exc:
        print(f"medveil: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        print("medveil: interrupted; no output was left half-written", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        print(f"medveil: error: {_one_line(_os_error_line(exc))}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # a usage error
            if type(exc).__name__ == "NoArgsIsHelpError":
                print(exc.format_message())
                sys.exit(0)
            command = getattr(getattr(exc, "ctx", None), "command_path", "medveil")
            print(f"medveil: error: {_one_line(exc.format_message())} (see `{command} "
                  "--help`)", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
