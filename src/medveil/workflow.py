"""The three roles on files: one function per command, the same for every scheme.

* owner: ``protect`` (release + owner state), ``decode`` (the processor's results
  -> predictions, with metrics against the owner's ground truth), ``recover``
  (images back, invertible schemes);
* processor, with no key and no owner state: ``train`` (on one or several
  releases), ``predict``;
* key holder: ``recover`` with the key and the state the owner gave it, then
  ``train`` / ``predict`` on the recovered images like any plaintext set.

Each function calls the scheme's protocol (``medveil.protocols``); the bench calls
the same protocol methods in memory, so a bench row is what this workflow gives
on the same data, seed and key.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import (
    atomic_directory,
    atomic_write_bytes,
    check_output,
    same_or_inside,
    write_private_file,
)
from medveil.budgets import BenchBudget, get_budget
from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, IntegrityError, KeyMismatchError
from medveil.keys import Key
from medveil.owner_state import save_owner_state, scheme_for
from medveil.protocols import get_protocol, run_rounds
from medveil.protocols.base import SCORED_SPLIT, results_header
from medveil.protocols.messages import PROCESSOR, Message, write_message
from medveil.protocols.view import train_standard
from medveil.seeds import derive_seed
from medveil.store import (
    RESULTS_FORMAT,
    ProtectedStore,
    content_id,
    is_store,
    open_store,
)


# ----------------------------------------------------------------------------- owner
def public_images(imageset: ImageSet, source: str) -> ImageSet:
    """``--public``: a split of the data being protected, or a data set read like it."""
    from medveil.data import load_dataset

    if source in imageset.split_names:
        if source == "train":
            raise ConfigError("--public train: the training split is the owner's patients; "
                              "name another split or a public data set")
        return imageset.split(source)
    c, h, w = imageset.image_shape
    return load_dataset(source, size=(h, w), color="rgb" if c == 3 else "gray")


def protect_dataset(imageset: ImageSet, *, scheme: str, key: Key, out: str | os.PathLike[str],
                    state: str | os.PathLike[str] | None = None, seed: int = 0,
                    params: dict[str, Any] | None = None, budget: str | BenchBudget = "full",
                    force: bool = False, public: str | None = None,
                    class_names: str | None = None) -> dict[str, Any]:
    """Fit ``scheme`` on the train split; write the release and the owner state apart.

    ``class_names``: what the release calls the classes. Folder names can carry
    identifiers (``DOE_JOHN_MRN1234567/``): ``index`` sends ``class_0``, ``class_1``,
    ... and keeps the real names in the owner state; a comma list (one name per label
    value, in order) sends those; None sends the data set's own names.

    ``public`` names images that are not the owner's patients (a public or consented
    set) for schemes that take them (fesf's hosts): a split of ``imageset`` or a data
    set to read at the same size and colour.

    The release is what the scheme's protocol ships (views, and what travels with
    them); the owner state is the fitted scheme, in its own 0700 folder. Image ids
    (file names can identify patients) are not written.
    """
    from medveil.schemes import create, get_scheme_class

    budget = get_budget(budget) if isinstance(budget, str) else budget
    cls = get_scheme_class(scheme)
    if state is None and cls.needs_fit:
        raise ConfigError(f"scheme '{scheme}' keeps owner state (what it fits: networks, host "
                          "images, the HE model); pass --state FOLDER, a folder that stays "
                          "with you, apart from the release")
    if state is not None and same_or_inside(Path(state), Path(out)):
        raise ConfigError(f"--state {state} and --out {out} must be separate folders: the "
                          "release leaves, the owner state stays")
    source = imageset.meta.get("source")
    check_output(out, force=force, inputs=(source, state))
    if state is not None:
        check_output(state, force=force, inputs=(source, out), option="--state")
    imageset, real_names = renamed_classes(imageset, class_names)
    instance = create(scheme, **budget.scheme_params(cls, params))
    protocol = get_protocol(instance.protocol)
    started = time.perf_counter()
    instance.fit(instance.fit_data(imageset), key=key, seed=seed,
                 public=None if public is None else public_images(imageset, public))
    fit_s = time.perf_counter() - started
    # the owner's half of the protocol: its first message is the release
    owner = protocol.owner_half(instance, imageset, key=key, budget=budget, seed=seed)
    release = owner.start()
    protect_s = owner.figures["protect_ms_per_image"] * len(imageset) / 1000
    manifest = write_message(out, release, key=key, force=force, inputs=(source, state))
    if state is not None:
        # What the owner sent, so that `decode` can refuse results for anything else.
        sent = {"content_id": content_id(manifest),
                "splits": {s: v["count"] for s, v in manifest["splits"].items()},
                "class_names": real_names}
        save_owner_state(state, instance, protocol=protocol.name, force=force,
                         inputs=(source, out), release=sent)
    return {"store": str(Path(out)), "state": None if state is None else str(state),
            "scheme": instance.name, "protocol": protocol.name,
            "splits": {s: release.split_count(s) for s in release.arrays},
            "fit_s": fit_s, "protect_s": protect_s, "key_fingerprint": key.fingerprint}


def renamed_classes(imageset: ImageSet, class_names: str | None
                    ) -> tuple[ImageSet, list[str] | None]:
    """``imageset`` with the class names the release may carry (see ``protect_dataset``),
    and the real names (to keep in the owner state), or None where unchanged."""
    from dataclasses import replace

    if class_names is None:
        return imageset, None
    if imageset.task != "classification":
        raise ConfigError(f"--class-names: {imageset.name} is a {imageset.task} set; it has no "
                          "classes to name")
    count = imageset.num_classes
    if class_names == "index":
        names = [f"class_{i}" for i in range(count)]
    else:
        names = [n.strip() for n in class_names.split(",")]
        if len(names) != count or not all(names) or len(set(names)) != count or any(
                len(n) > 64 or not n.replace("_", "").replace("-", "").isalnum()
                for n in names):
            raise ConfigError(f"--class-names {class_names[:60]!r}: give 'index' or {count} "
                              "distinct names of letters, digits, _ and - (one per label "
                              "value, in order)")
    return replace(imageset, class_names=names), imageset.class_names


def decode_results(results: str | os.PathLike[str], *, key: Key | None,
                   state: str | os.PathLike[str] | None, out: str | os.PathLike[str],
                   truth: ImageSet | None = None, force: bool = False) -> dict[str, Any]:
    """Owner: the processor's results -> predictions (CSV or mask PNGs); metrics when the
    owner's ``truth`` (the data set the release was made from) is given."""
    bundle = open_store(results, fmt=RESULTS_FORMAT)
    manifest = bundle.manifest
    _check_results(bundle, results, state)
    expected = manifest.get("release_key_fingerprint")
    if key is not None and expected is not None and expected != key.fingerprint:
        raise KeyMismatchError(f"results {results} answer a release made with key "
                               f"{expected[:12]}..., not {key.fingerprint[:12]}...; pass the "
                               "key of the owner who made that release")
    protocol = get_protocol(manifest["protocol"]["name"])
    scheme = None
    if manifest.get("scheme"):
        scheme = scheme_for(manifest, state, key=key)
    decoded = protocol.decode(scheme, bundle, key=key)
    summary: dict[str, Any] = {"out": str(out), "images": len(decoded), "task": decoded.task}
    if truth is not None:  # scored first: a wrong --data writes nothing
        summary["metrics"] = decoded.metrics(truth.split(manifest["split"]))
    _write_predictions(Path(out), decoded, force=force, inputs=(results, state))
    return summary


def _check_results(bundle: ProtectedStore, where: Any, state: Any) -> None:
    """The processor's results, checked as an adversary's: a split and protocol by name,
    and, with the owner state, exactly the release the owner sent (its content digest:
    views, ciphertexts, encrypted weights) and one result per item of the split."""
    manifest = bundle.manifest
    split = manifest.get("split")
    protocol = manifest.get("protocol")
    if not isinstance(split, str) or split not in bundle.arrays or len(bundle.arrays) != 1:
        raise IntegrityError(f"results {where} do not hold exactly one split named by their "
                             "manifest; ask the processor for the output of `medveil predict`")
    if not isinstance(protocol, dict) or not isinstance(protocol.get("name"), str):
        raise IntegrityError(f"results {where} name no protocol; they are not medveil results")
    if state is None:
        return
    from medveil.owner_state import read_sent_release

    sent = read_sent_release(state)
    if sent is None:
        return
    # A key holder's predictions on recovered images name no release (it predicted on
    # plaintext, the protocol's processor answers nothing); they are checked by their
    # count only. Results of a protocol whose processor answers must name the release.
    if manifest.get("release") is None and sent.get("protocol") is not None and \
            get_protocol(sent["protocol"]).answers:
        raise IntegrityError(f"results {where} name no release, and the release recorded in "
                             f"the owner state {state} was answered by its processor: these "
                             "results are not for it; ask the processor for results on the "
                             "release you sent")
    if manifest.get("release") is not None and manifest.get("release") != sent["content_id"]:
        raise IntegrityError(f"results {where} do not answer the release recorded in the owner "
                             f"state {state} (another release, or edited results); ask the "
                             "processor for results on the release you sent")
    expected = sent["splits"].get(split)
    count = bundle.manifest["splits"][split]["count"]
    if expected is None or count != expected:
        raise IntegrityError(f"results {where} hold {count} results for split '{split}', the "
                             f"release sent {expected}; ask the processor for complete results")


def _write_predictions(out: Path, decoded, *, force: bool, inputs: tuple[Any, ...]) -> None:
    if decoded.task == "classification":
        probs = decoded.probabilities
        columns = [f"prob_{k}" for k in range(probs.shape[1])]
        values = [probs]
        if decoded.logits is not None:
            columns += [f"logit_{k}" for k in range(decoded.logits.shape[1])]
            values.append(decoded.logits)
        table = np.concatenate(values, axis=1)
        lines = ["index," + ",".join(columns) + ",predicted"]
        lines += [f"{i}," + ",".join(f"{v:.8g}" for v in row) + f",{int(p.argmax())}"
                  for i, (row, p) in enumerate(zip(table, probs, strict=True))]
        atomic_write_bytes(out, ("\n".join(lines) + "\n").encode(), force=force, inputs=inputs)
        return
    from PIL import Image

    with atomic_directory(out, force=force, inputs=inputs, marker="decoded-masks") as tmp:
        for i, mask in enumerate(decoded.masks):
            buffer = io.BytesIO()
            Image.fromarray((mask[0] > 0).astype(np.uint8) * 255).save(buffer, format="PNG")
            write_private_file(tmp / f"mask_{i:05d}.png", buffer.getvalue())


def recover_release(release: str | os.PathLike[str], *, key: Key,
                    state: str | os.PathLike[str] | None, out: str | os.PathLike[str],
                    force: bool = False) -> dict[str, Any]:
    """Key holder: the images back from a release, as an npz in the MedMNIST layout
    (``{split}_images`` float32 (N, C, H, W), ``{split}_labels`` / ``{split}_masks``) or
    as PNGs under ``out/{split}/``; owner-only files (they are patient images)."""
    check_output(out, force=force, inputs=(release, state))
    bundle = open_store(release, key=key)
    scheme = scheme_for(bundle.manifest, state, key=key)
    if not scheme.invertible:
        raise ConfigError(f"scheme '{scheme.name}' is not invertible: nobody, key holder "
                          "included, can get the images back from its release")
    recovered = get_protocol(bundle.protocol_name).recover(scheme, bundle, key=key)
    out = Path(out)
    if out.suffix == ".npz":
        arrays: dict[str, np.ndarray] = {"medveil_format": np.array("medveil.recovered/1")}
        for split in recovered.split_names:
            part = recovered.split(split)
            arrays[f"{split}_images"] = part.images
            if part.labels is not None:
                arrays[f"{split}_labels"] = part.labels
            if part.masks is not None:
                arrays[f"{split}_masks"] = part.masks
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(out, buffer.getvalue(), force=force, inputs=(release, state))
    else:
        from PIL import Image

        with atomic_directory(out, force=force, inputs=(release, state),
                              marker="recovered-images") as tmp:
            for split in recovered.split_names:
                (tmp / split).mkdir(mode=0o700)
                for i, image in enumerate(recovered.split(split).images):
                    picture = np.round(np.moveaxis(image, 0, -1) * 255).astype(np.uint8)
                    buffer = io.BytesIO()
                    Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture
                                    ).save(buffer, format="PNG")
                    write_private_file(tmp / split / f"{i:05d}.png", buffer.getvalue())
    return {"out": str(out), "scheme": scheme.name,
            "splits": {s: int((recovered.splits == s).sum()) for s in recovered.split_names}}


# ----------------------------------------------------------------------------- processor
def _local_paths(sources: list[str]) -> list[str]:
    """The sources that are paths here (not bundled set names): outputs must avoid them."""
    return [s for s in sources if Path(s).exists()]


def _open_sources(sources: list[str], read_options: dict[str, Any]
                  ) -> tuple[list[ProtectedStore], list[ImageSet]]:
    from medveil.data import load_dataset

    releases = [open_store(s) for s in sources if is_store(s)]
    plain = [load_dataset(s, **read_options) for s in sources if not is_store(s)]
    if releases and plain:
        raise ConfigError("--data mixes releases and plaintext data sets; train on one kind")
    return releases, plain


def train(sources: list[str], *, out: str | os.PathLike[str], budget: str | BenchBudget =
          "full", seed: int = 0, epochs: int | None = None, steps: int | None = None,
          progress: bool = False, read_options: dict[str, Any] | None = None,
          force: bool = False) -> dict[str, Any]:
    """Processor (or a key holder on recovered images): train on one or several sources.

    Releases train what their protocol trains (the standard model on views, the
    mapping network on encoded pairs); several releases train one pooled model.
    Plaintext sources (a key holder's recovered npz) train the standard model.
    """
    from medveil.protocols.view import concat_imagesets

    if not sources:
        raise ConfigError("give at least one --data")
    check_output(out, force=force, inputs=_local_paths(sources))
    budget = get_budget(budget) if isinstance(budget, str) else budget
    if epochs is not None:
        budget.classifier.epochs = epochs
    if steps is not None:
        budget.segmenter.steps = steps
        budget.segmenter.eval_every = min(budget.segmenter.eval_every, steps)
    releases, plain = _open_sources(sources, read_options or {})
    if plain:
        # plaintext (a key holder's recovered images) trains the standard model: the
        # view protocol's model, whatever protocol made the release it was recovered from
        from medveil.protocols.view import ViewProtocol

        protocol = get_protocol(ViewProtocol.name)
        model = train_standard(concat_imagesets(plain), budget=budget, seed=seed,
                               progress=progress)
    else:
        names = {r.protocol_name for r in releases}
        if len(names) > 1:
            raise ConfigError(f"the releases run under different protocols ({sorted(names)}); "
                              "pool releases of one scheme")
        protocol = get_protocol(names.pop())
        model = protocol.train(releases, budget=budget, seed=seed, progress=progress)
    protocol.save_model(model, out, force=force)
    return {"out": str(out), "protocol": protocol.name, "task": model.task,
            "train_s": model.train_s, "releases": len(releases)}


def load_processor_model(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """A model file from ``train``: (protocol, model)."""
    from medveil.model_file import read_model_record

    record = read_model_record(path)
    name = record.get("protocol")
    if not isinstance(name, str):
        from medveil.errors import ModelFileError

        raise ModelFileError(f"{path} names no protocol; train it again with this version")
    protocol = get_protocol(name)
    return protocol, protocol.load_model(record, path)


def predict(model: str | os.PathLike[str] | None, data: str, *, split: str,
            out: str | os.PathLike[str], force: bool = False,
            read_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Processor: results on ``split`` of a release (or of a plaintext set, for a key
    holder), written as a results set that names the release it answers."""
    from medveil.protocols.view import predict_standard

    started = time.perf_counter()
    check_output(out, force=force, inputs=(*_local_paths([data]), model))
    if is_store(data):
        release = open_store(data)
        protocol = get_protocol(release.protocol_name)
        loaded = None
        if model is not None:
            model_protocol, loaded = load_processor_model(model)
            if model_protocol.name != protocol.name:
                raise ConfigError(f"{model} is a '{model_protocol.name}' model and {data} a "
                                  f"'{protocol.name}' release; use a model trained on such "
                                  "releases")
        release.part(split)
        arrays, info = protocol.predict(loaded, release, split=split)
        header = results_header(protocol, release, info, split=split)
    else:
        from medveil.data import load_dataset

        if model is None:
            raise ConfigError(f"{data} is not a release; pass --model to predict on it")
        protocol, loaded = load_processor_model(model)
        imageset = load_dataset(data, **(read_options or {}))
        arrays = predict_standard(loaded, imageset.split(split).images)
        header = {"protocol": {"name": protocol.name}, "scheme": None, "release": None,
                  "release_key_fingerprint": None,
                  "dataset": {"task": imageset.task, "class_names": imageset.class_names},
                  "split": split}
    seconds = time.perf_counter() - started
    write_message(out, Message(kind="results", sender=PROCESSOR, round=0,
                               arrays={split: arrays}, header=header),
                  force=force, inputs=(*_local_paths([data]), model))
    count = len(next(iter(arrays.values())))
    return {"out": str(out), "protocol": protocol.name, "split": split, "images": count,
            "ms_per_image": 1000 * seconds / max(1, count)}


# ----------------------------------------------------------------------------- several centres
def run_multicentre(data: ImageSet, *, centres: int = 2, scheme: str = "privacy_sf",
                    budget: str | BenchBudget = "quick", seed: int = 0,
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics per centre: one pooled model against each centre alone.

    The workflow above, in memory: each centre protects its part with its own key
    (the reproducible bench keys ``centre-i``), the processor trains one model on all
    releases and one per release, each centre decodes its own results with its own
    key and state and scores them against its own ground truth.
    """
    from medveil.attacks.suite import seeded_key
    from medveil.multicentre import split_into_centres
    from medveil.schemes import create, get_scheme_class

    budget = get_budget(budget) if isinstance(budget, str) else budget
    parts = split_into_centres(data, centres, seed=seed)
    cls = get_scheme_class(scheme)
    protocol = get_protocol(cls.protocol)
    fitted = []
    for index, part in enumerate(parts):
        key = seeded_key(f"centre-{index}", seed)
        instance = create(scheme, **budget.scheme_params(cls, params))
        instance.fit(instance.fit_data(part), key=key,
                     seed=derive_seed(seed, f"multicentre/centre-{index}/fit"))
        fitted.append((instance, key, part))

    def owners(chosen):
        return [protocol.owner_half(instance, part, key=key, budget=budget, seed=seed)
                for instance, key, part in chosen]

    pooled = owners(fitted)  # every centre's release, one processor, one pooled model
    transcripts = run_rounds(pooled, protocol.processor_half(budget=budget, seed=seed))
    rows = []
    for index, (owner, transcript) in enumerate(zip(pooled, transcripts, strict=True)):
        alone = owners([fitted[index]])  # the same centre with a processor of its own
        run_rounds(alone, protocol.processor_half(budget=budget, seed=seed))
        part = fitted[index][2]
        figures = {mode: half.decoded.metrics(part.split(SCORED_SPLIT))
                   for mode, half in (("pooled", owner), ("alone", alone[0]))}
        rows.append({"centre": index, "n_train": len(part.split("train")),
                     "n_pairs": transcript[0].split_count("train"),
                     "n_test": len(part.split("test")), **figures})
    metrics = list(rows[0]["pooled"])
    mean = {mode: {m: float(np.mean([r[mode][m] for r in rows])) for m in metrics}
            for mode in ("pooled", "alone")}
    return {"scheme": scheme, "protocol": protocol.name, "params": dict(fitted[0][0].params),
            "centres": centres, "seed": seed, "budget": budget.mode, "dataset": data.name,
            "rows": rows, "mean": mean}


def multicentre_table(record: dict[str, Any]) -> str:
    """The multi-centre record as a Markdown table (headline metric first)."""
    metrics = list(record["mean"]["pooled"])
    head = "| centre | train / test images | training items | " + " | ".join(
        f"{m} pooled | {m} alone" for m in metrics) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(metrics))]
    for row in record["rows"]:
        lines.append(f"| {row['centre']} | {row['n_train']} / {row['n_test']} | "
                     f"{row['n_pairs']} | " + " | ".join(
                         f"{row['pooled'][m]:.3f} | {row['alone'][m]:.3f}" for m in metrics)
                     + " |")
    lines.append("| mean | | | " + " | ".join(
        f"{record['mean']['pooled'][m]:.3f} | {record['mean']['alone'][m]:.3f}"
        for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def write_multicentre(record: dict[str, Any], out: str | os.PathLike[str], *,
                      force: bool = False) -> Path:
    """``out/multicentre.json`` and ``out/multicentre.md``, atomically."""
    with atomic_directory(out, force=force, marker="multicentre") as tmp:
        write_private_file(tmp / "multicentre.json", (json.dumps(record, indent=2) + "\n")
                           .encode())
        write_private_file(tmp / "multicentre.md", multicentre_table(record).encode())
    return Path(out)
