"""`medveil bench`: every chosen scheme through one pipeline into one scorecard.

For each scheme: the owner fits it on the training split and protects every
split with the victim key; the processor's task runs the way the scheme
declares (``utility_path``) with the same model and budget as ``plain``; the
attack suite attacks the held-out test views; key holders' recovery and a
wrong-key decode are measured for invertible schemes. A scheme that fails
becomes a row with ``status: error`` and the others go on.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medveil import __version__
from medveil.atomic import atomic_write_bytes
from medveil.attacks import (
    AttackBudget,
    known_plaintext,
    leak_count,
    reidentification,
    shadow_key,
    visual,
)
from medveil.attacks.suite import seeded_key
from medveil.data import ImageSet, load_dataset
from medveil.data.bundled import DEFAULT_CLASSIFICATION
from medveil.errors import ConfigError
from medveil.metrics import image_similarity, segmentation_metrics, texture_agreement
from medveil.progress import progress_bar
from medveil.schemes import available_schemes, create, get_scheme_class
from medveil.tasks import (
    ClassifierConfig,
    SegmenterConfig,
    evaluate_model,
    predict_proba,
    train_model,
)

SCORECARD_SCHEMA = "medveil.scorecard/1"
SCHEMA_FILE = Path(__file__).parent / "scorecard.schema.json"
GRID_IMAGES = 4
RECOVERY_IMAGES = 32


@dataclass
class BenchBudget:
    """Everything that differs between ``--quick`` and a full run."""

    mode: str
    classifier: ClassifierConfig
    segmenter: SegmenterConfig
    attacks: AttackBudget
    max_train: int | None
    max_test: int | None

    @classmethod
    def for_mode(cls, quick: bool) -> BenchBudget:
        if quick:
            return cls("quick", ClassifierConfig(epochs=10),
                       SegmenterConfig(steps=150, patch=96, eval_every=50),
                       AttackBudget.quick(), max_train=600, max_test=200)
        return cls("full", ClassifierConfig(), SegmenterConfig(), AttackBudget(),
                   max_train=None, max_test=None)


def validate_scorecard(scorecard: dict[str, Any]) -> None:
    """Raise if ``scorecard`` breaks the output contract (scorecard.schema.json)."""
    import jsonschema

    jsonschema.validate(scorecard, json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class SchemeSpec:
    """One scorecard row to run: a registered scheme with parameter overrides."""

    label: str
    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def create(self, *, quick: bool = False):
        """The scheme with this row's parameters; ``quick`` adds its ``quick_params``."""
        defaults = get_scheme_class(self.name).quick_params if quick else {}
        return create(self.name, **{**defaults, **dict(self.params)})


def parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_schemes(text: str) -> list[SchemeSpec]:
    """``all`` or a comma list of ``name`` or ``name:param=value:param=value`` (ablations).

    ``plain`` is always first; unknown names are a clear error with a suggestion.
    """
    items = available_schemes() if text.strip() == "all" else \
        [n.strip() for n in text.split(",") if n.strip()]
    if not items:
        raise ConfigError("--schemes is empty; give 'all' or a comma list such as plain,primis")
    specs: dict[str, SchemeSpec] = {}
    for item in items:
        name, *assignments = item.split(":")
        get_scheme_class(name)
        params = []
        for assignment in assignments:
            if "=" not in assignment:
                raise ConfigError(f"'{item}': parameter '{assignment}' must look like NAME=VALUE")
            key, raw = assignment.split("=", 1)
            params.append((key, parse_value(raw)))
        specs[item] = SchemeSpec(item, name, tuple(params))
    plain = specs.pop("plain", SchemeSpec("plain", "plain"))
    return [plain, *specs.values()]


def _for_task(specs: list[SchemeSpec], task: str, data_name: str, *, explicit: bool
              ) -> list[SchemeSpec]:
    """The specs whose scheme serves ``task``: `all` skips the others, a named one is refused."""
    kept = []
    for spec in specs:
        tasks = get_scheme_class(spec.name).tasks
        if task in tasks:
            kept.append(spec)
        elif explicit:
            raise ConfigError(f"scheme '{spec.name}' serves {', '.join(tasks)}, and "
                              f"{data_name} is a {task} set; bench it on a "
                              f"{' or '.join(tasks)} set (e.g. chase-demo)")
    return kept


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count() or 1, "torch": torch.__version__,
            "device": "cpu", "threads": torch.get_num_threads()}


def subsample_for_budget(data: ImageSet, budget: BenchBudget, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    keep = []
    for split in data.split_names:
        idx = np.nonzero(data.splits == split)[0]
        limit = budget.max_test if split == "test" else budget.max_train
        if limit is not None and len(idx) > limit:
            idx = np.sort(rng.choice(idx, limit, replace=False))
        keep.append(idx)
    return data.subset(np.concatenate(keep))


def protect_all(scheme, images: np.ndarray, key) -> np.ndarray:
    return np.concatenate([scheme.protect(images[i:i + 256], key=key)
                           for i in range(0, len(images), 256)])


def with_images(data: ImageSet, images: np.ndarray) -> ImageSet:
    out = data.subset(np.arange(len(data)))
    out.images = np.clip(images, 0, 1).astype(np.float32)
    return out


def protect_splits(scheme, data: ImageSet, key) -> dict[str, np.ndarray]:
    """Every split's views under ``key``, by split name."""
    return {s: protect_all(scheme, data.split(s).images, key) for s in data.split_names}


def processor_task_data(scheme, data: ImageSet, views: dict[str, np.ndarray], key) -> ImageSet:
    """The data set the standard task runs on, the way the scheme's utility path says.

    ``view``: the views themselves; ``key_holder``: the key holder's recoveries. The
    images are concatenated in split order with their labels or masks, so one
    helper serves the bench rows and the utility-only benchmark scripts alike.
    """
    if scheme.utility_path == "view":
        images = [views[s] for s in data.split_names]
    elif scheme.utility_path == "key_holder":
        images = [scheme.recover(views[s], key=key) for s in data.split_names]
    else:
        raise ConfigError(f"scheme {scheme.name!r} has utility path {scheme.utility_path!r}; "
                          "the standard task runs only on views or key-holder recoveries")
    order = np.concatenate([np.nonzero(data.splits == s)[0] for s in data.split_names])
    return with_images(data.subset(order), np.concatenate(images))


def train_and_score(data: ImageSet, budget: BenchBudget, seed: int
                    ) -> tuple[dict[str, float], float, float]:
    """Train the standard model on ``data`` (views or recovered images); test metrics."""
    model = train_model(data, seed=seed, classifier=ClassifierConfig(**budget.classifier.__dict__),
                        segmenter=SegmenterConfig(**budget.segmenter.__dict__))
    test = data.split("test")
    started = time.perf_counter()
    metrics = evaluate_model(model, data)
    if model.task == "classification":  # evaluate_model warmed up: time one steady pass
        started = time.perf_counter()
        predict_proba(model, test.images)
    infer_ms = 1000 * (time.perf_counter() - started) / max(1, len(test))
    return metrics, model.train_s, infer_ms


def _encrypted_inference_row(scheme, row: dict[str, Any], test: ImageSet, victim_key, wrong_key,
                             fit_s: float) -> dict[str, Any]:
    """A row for schemes whose views are ciphertexts (ckks).

    The model owner trained in plaintext (``fit``); the processor evaluates on the
    ciphertexts of every test image; the owner decrypts the logits. The image attacks
    do not apply: the row says why and with which parameters. Recovery (the owner's
    decryption) and the wrong-key check run on the first ``RECOVERY_IMAGES`` test images
    (each view is about 1 MB of ciphertext).
    """
    row["params"] = dict(scheme.params)
    result = scheme.encrypted_utility(test, key=victim_key)
    row["utility"] = result.pop("metrics")
    row["encrypted_inference"] = {**result, "security": scheme.he_params.security()}
    sample = test.images[:RECOVERY_IMAGES]
    started = time.perf_counter()
    view = scheme.protect(sample, key=victim_key)
    protect_ms = 1000 * (time.perf_counter() - started) / len(sample)
    recovered = scheme.recover(view, key=victim_key)
    row["recovery"] = image_similarity(sample, recovered)
    row["wrong_key"] = image_similarity(sample, scheme.recover_bypassing_check(view, wrong_key))
    row["attacks"] = {"visual": None, "known_plaintext": None, "shadow_key": None,
                      "reidentify": None, "not_applicable": scheme.not_applicable_reason()}
    row["cost"] = {"fit_s": fit_s, "protect_ms_per_image": protect_ms,
                   "train_s": scheme.model.info.get("train_s"),
                   "infer_ms_per_image": result["latency_ms_per_image"],
                   "view_bytes_per_image": result["ciphertext_bytes_per_image"],
                   "plain_bytes_per_image": float(np.prod(test.image_shape))}
    row["_pictures"] = {"original": sample[:GRID_IMAGES],
                        "key-holder recovery": recovered[:GRID_IMAGES]}
    return row


def _encoded_segmentation_row(spec: SchemeSpec, scheme, row: dict[str, Any], data: ImageSet,
                              budget: BenchBudget, seed: int, victim_key, wrong_key,
                              fit_s: float) -> dict[str, Any]:
    """A row for schemes whose server segments encoded images into encoded masks.

    The client encodes every split's images and the training masks (with the
    flipped copies its ``training_pairs`` adds); the server fits its mapping network
    on the encoded training pairs only; the client decodes the server's predictions
    on its encoded test images (``segment``: with the client's test-time flipped
    copies; the latency counts the whole round trip). The image attacks then run
    on the encoded images as on any view. ``wrong_key`` is a client who decodes the
    server's predictions with a key of its own (bypassing the fingerprint check).
    """
    train, test = data.split("train"), data.split("test")
    started = time.perf_counter()
    views = {s: protect_all(scheme, data.split(s).images, victim_key) for s in ("train", "test")}
    protect_ms = 1000 * (time.perf_counter() - started) / (len(train) + len(test))
    pairs = scheme.training_pairs(train.images, train.masks, key=victim_key)
    started = time.perf_counter()
    mapping = scheme.train_mapping([pairs], seed=seed)
    train_s = time.perf_counter() - started
    started = time.perf_counter()  # the client's round trip: encode, server maps, decode
    masks = scheme.segment(test.images, lambda tokens: scheme.map_tokens(mapping, tokens),
                           key=victim_key)
    infer_ms = 1000 * (time.perf_counter() - started) / len(test)
    row["params"] = dict(scheme.params)
    row["utility"] = segmentation_metrics(masks, test.masks)
    predicted = scheme.map_tokens(mapping, views["test"])
    row["wrong_key_masks"] = segmentation_metrics(
        scheme.decode_masks_bypassing_check(predicted, wrong_key), test.masks)
    pictures: dict[str, np.ndarray] = {"original": test.images[:GRID_IMAGES],
                                       "decoded mask": masks[:GRID_IMAGES].astype(np.float32)}
    _image_attacks(spec, scheme, row, pictures, train, test, views, budget, seed)
    row["cost"] = {"fit_s": fit_s, "protect_ms_per_image": protect_ms, "train_s": train_s,
                   "infer_ms_per_image": infer_ms,
                   "view_bytes_per_image": views["test"].nbytes / len(test),
                   "plain_bytes_per_image": float(np.prod(test.image_shape))}
    row["_pictures"] = pictures
    return row


def run_scheme(spec: SchemeSpec, data: ImageSet, budget: BenchBudget, seed: int
               ) -> dict[str, Any]:
    """One scorecard row, plus the images the report shows."""
    victim_key = seeded_key("victim", seed)
    wrong_key = seeded_key("wrong", seed)
    scheme = spec.create(quick=budget.mode == "quick")
    row: dict[str, Any] = {"scheme": spec.label, "params": dict(scheme.params), "status": "ok",
                           "error": None, "utility": None, "recovery": None, "wrong_key": None,
                           "attacks": {}, "cost": {}}
    train, test = data.split("train"), data.split("test")
    started = time.perf_counter()
    scheme.fit(train, key=victim_key, seed=seed)
    fit_s = time.perf_counter() - started
    if scheme.utility_path == "encrypted_inference":
        return _encrypted_inference_row(scheme, row, test, victim_key, wrong_key, fit_s)
    if scheme.utility_path == "encoded_segmentation":
        return _encoded_segmentation_row(spec, scheme, row, data, budget, seed, victim_key,
                                         wrong_key, fit_s)
    started = time.perf_counter()
    views = protect_splits(scheme, data, victim_key)
    protect_ms = 1000 * (time.perf_counter() - started) / len(data)
    row["params"] = dict(scheme.params)
    task_data = processor_task_data(scheme, data, views, victim_key)
    row["utility"], train_s, infer_ms = train_and_score(task_data, budget, seed)

    pictures: dict[str, np.ndarray] = {"original": test.images[:GRID_IMAGES]}
    if scheme.invertible:
        recovered = scheme.recover(views["test"], key=victim_key)
        row["recovery"] = image_similarity(test.images, recovered)
        pictures["key-holder recovery"] = recovered[:GRID_IMAGES]
        # An attacker who bypasses the fingerprint check and decodes with a key of its own.
        row["wrong_key"] = image_similarity(
            test.images, scheme.recover_bypassing_check(views["test"], wrong_key))
        if scheme.utility_path == "key_holder":  # does the recovery keep the texture?
            row["texture"] = texture_agreement(test.images, recovered)

    _image_attacks(spec, scheme, row, pictures, train, test, views, budget, seed)
    view_bytes = views["test"].nbytes / len(views["test"])
    row["cost"] = {"fit_s": fit_s, "protect_ms_per_image": protect_ms, "train_s": train_s,
                   "infer_ms_per_image": infer_ms, "view_bytes_per_image": view_bytes,
                   "plain_bytes_per_image": float(np.prod(test.image_shape))}  # uint8 pixels
    row["_pictures"] = pictures
    return row


def _image_attacks(spec: SchemeSpec, scheme, row: dict[str, Any],
                   pictures: dict[str, np.ndarray], train: ImageSet, test: ImageSet,
                   views: dict[str, np.ndarray], budget: BenchBudget, seed: int) -> None:
    """The shared suite (and the scheme's own attacks) on the views, into ``row``."""
    vis = visual(scheme.view_as_image(views["test"]), test.images)
    row["attacks"]["visual"] = vis.figures
    if vis.reconstructions is not None:
        pictures["view"] = vis.reconstructions[:GRID_IMAGES]
    attack_budget = budget.attacks
    k = leak_count(len(train), attack_budget)
    leak = np.sort(np.random.default_rng(seed + 11).choice(len(train), k, replace=False))
    kp, kp_net = known_plaintext(views["train"][leak], train.images[leak], views["test"],
                                 test.images, budget=attack_budget, seed=seed)
    row["attacks"]["known_plaintext"] = kp.figures
    sk = shadow_key(lambda: create(spec.name, **row["params"]), train, views["test"], test.images,
                    budget=attack_budget, seed=seed)
    row["attacks"]["shadow_key"] = sk.figures
    reid = reidentification(kp_net, views["train"][leak], train.images[leak], views["test"],
                            test.images, budget=attack_budget, seed=seed)
    row["attacks"]["reidentify"] = reid.figures
    row["attacks"].update(scheme.extra_attacks(
        views["test"], test.images, leaked_views=views["train"][leak],
        leaked_images=train.images[leak], budget=attack_budget, seed=seed))
    best = max((kp, sk), key=lambda r: r.figures["ssim"])
    pictures["best attack"] = best.reconstructions[:GRID_IMAGES]


def run_header(dataset: ImageSet, budget: BenchBudget, seed: int) -> dict[str, Any]:
    """What must match for a finished row to be reused by ``--resume``."""
    header = {"dataset": {"name": dataset.name, "image_size": list(dataset.image_shape[1:]),
                          "n_train": int((dataset.splits == "train").sum()),
                          "n_test": int((dataset.splits == "test").sum())},
              "seed": seed, "mode": budget.mode, "budget": asdict(budget),
              "medveil_version": __version__}
    return json.loads(json.dumps(header, default=str))  # as it reads back from disk


def _resumable_rows(path: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``ok`` rows of an interrupted run, by scheme label; refuses a different run."""
    if not path.exists():
        return {}
    try:
        partial = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} to resume ({exc}); delete it or drop "
                          "--resume") from exc
    if not isinstance(partial, dict) or "results" not in partial:
        raise ConfigError(f"{path} is not a partial scorecard this version wrote; delete it "
                          "or drop --resume")
    for field, expected in header.items():
        if partial.get(field) != expected:
            raise ConfigError(f"{path} is from a different run (its {field} differs from "
                              "this one's); use another --out or drop --resume")
    return {row["scheme"]: row for row in partial["results"] if row.get("status") == "ok"}


def run_bench(*, data: str | os.PathLike[str] | None = None, schemes: str = "all",
              quick: bool = False, seed: int = 0, out: str | os.PathLike[str] = "bench-output",
              progress: bool = True, read_options: dict[str, Any] | None = None,
              budget: BenchBudget | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the benchmark and write scorecard.json, report.md, report.html and pictures.

    With ``resume``, rows that finished ``ok`` in an interrupted run into the same
    ``out`` (its ``scorecard.partial.json``) are kept instead of run again, provided
    the data set, seed and budget match; they are marked ``resumed`` and have no
    pictures in the report.
    """
    from medveil.report import write_report

    specs = parse_schemes(schemes)
    source = data if data is not None else DEFAULT_CLASSIFICATION
    dataset = load_dataset(source, seed=seed, **(read_options or {}))
    if dataset.task == "none":
        raise ConfigError(f"{dataset.name} has neither labels nor masks: nothing to benchmark")
    specs = _for_task(specs, dataset.task, dataset.name, explicit=schemes.strip() != "all")
    if "test" not in dataset.split_names:
        raise ConfigError(f"{dataset.name} has no test split to measure on")
    budget = budget or BenchBudget.for_mode(quick)
    dataset = subsample_for_budget(dataset, budget, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = run_header(dataset, budget, seed)
    finished = _resumable_rows(out / "scorecard.partial.json", header) if resume else {}
    started = time.perf_counter()
    rows = []
    with progress_bar(progress) as bar:
        task = bar.add_task("bench", total=len(specs))
        for spec in specs:
            bar.update(task, description=f"bench: {spec.label}")
            scheme_started = time.perf_counter()
            if spec.label in finished:
                row = {**finished[spec.label], "resumed": True}
            else:
                try:
                    row = run_scheme(spec, dataset, budget, seed)
                except Exception as exc:  # noqa: BLE001 - a failing row, not a crash
                    row = {"scheme": spec.label, "params": dict(spec.params),
                           "status": "error", "error": f"{type(exc).__name__}: {exc}",
                           "utility": None, "recovery": None, "wrong_key": None,
                           "attacks": {}, "cost": {}, "_traceback": traceback.format_exc()}
                row["wall_s"] = time.perf_counter() - scheme_started
            rows.append(row)
            # Rows so far, for long runs (a full bench takes more than an hour here):
            # `--resume` picks them up after a crash or a stop.
            partial = {**header, "results": [{k: v for k, v in r.items()
                                              if not k.startswith("_")} for r in rows]}
            atomic_write_bytes(out / "scorecard.partial.json",
                               (json.dumps(partial, indent=2, default=float) + "\n").encode())
            bar.update(task, advance=1)
    pictures = {row["scheme"]: row.pop("_pictures", None) for row in rows}
    tracebacks = {row["scheme"]: row.pop("_traceback", None) for row in rows}
    scorecard = {
        "schema": SCORECARD_SCHEMA,
        "medveil_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": budget.mode,
        "seed": seed,
        "machine": _machine(),
        "dataset": {"name": dataset.name, "task": dataset.task,
                    "image_size": list(dataset.image_shape[1:]),
                    "n_train": int((dataset.splits == "train").sum()),
                    "n_test": int((dataset.splits == "test").sum()),
                    "source": dataset.meta.get("source")},
        "wall_s": time.perf_counter() - started,
        "results": rows,
    }
    validate_scorecard(scorecard)
    (out / "scorecard.partial.json").unlink(missing_ok=True)
    atomic_write_bytes(out / "scorecard.json", (json.dumps(scorecard, indent=2) + "\n").encode())
    write_report(out, scorecard, pictures)
    failed = {n: tb for n, tb in tracebacks.items() if tb}
    if failed:
        atomic_write_bytes(out / "errors.log",
                           "\n\n".join(f"== {n}\n{tb}" for n, tb in failed.items()).encode())
    return scorecard
