"""`medveil bench`: every chosen scheme through one pipeline into one scorecard.

For each scheme: the owner fits it on the training split and protects every
split with the victim key; the processor's task runs through the scheme's
protocol (the calls the command line makes) with the same model and budget as
``plain``; the attack suite attacks the held-out test views; key holders' recovery and a
wrong-key decode are measured for invertible schemes. A scheme that fails
becomes a row with ``status: error`` and the others go on.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medveil import __version__
from medveil.atomic import atomic_write_bytes
from medveil.attacks import (
    known_plaintext,
    reidentification,
    shadow_key,
    visual,
)
from medveil.attacks.suite import (
    attacker_floor,
    leak_sizes,
    seeded_key,
    third_parties,
    visual_reidentification,
    with_advantages,
)
from medveil.budgets import BenchBudget, get_budget
from medveil.cache import BenchCache, fit_scheme
from medveil.data import ImageSet, load_dataset
from medveil.data.bundled import DEFAULT_CLASSIFICATION
from medveil.errors import ConfigError
from medveil.metrics import image_similarity
from medveil.progress import progress_bar
from medveil.schemes import available_schemes, create, get_scheme_class
from medveil.schemes.base import check_params
from medveil.timing import StageClock
from medveil.verdicts import actor_verdicts

SCORECARD_SCHEMA = "medveil.scorecard/7"
SCHEMA_FILE = Path(__file__).parent / "scorecard.schema.json"
GRID_IMAGES = 4
RECOVERY_IMAGES = 32


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

    def create(self, *, budget: BenchBudget | None = None):
        """The scheme with this row's parameters; a budget that cuts schemes adds its
        ``quick_params`` where the row does not name them."""
        params = dict(self.params)
        if budget is not None:
            params = budget.scheme_params(get_scheme_class(self.name), params)
        return create(self.name, **params)


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
        check_params(get_scheme_class(name), dict(params))
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
    from medveil.protocols.base import protect_batched

    return protect_batched(scheme, images, key)


def protect_splits(scheme, data: ImageSet, key) -> dict[str, np.ndarray]:
    """Every split's views under ``key``, by split name."""
    return {s: protect_all(scheme, data.split(s).images, key) for s in data.split_names}


def finish_view_row(run, model, task_data: ImageSet, views: dict[str, np.ndarray],
                    protect_ms: float) -> dict[str, Any]:
    """The rest of a row once the standard model is trained (``view`` and ``key_holder``):
    utility from the model's test predictions, key holders' recovery and a wrong-key
    decode for invertible schemes, the attacks on the views, and the costs."""
    from medveil.protocols.base import decoded_predictions
    from medveil.protocols.view import predict_standard

    scheme, row, seed = run.scheme, run.row, run.seed
    train, test = run.data.split("train"), run.data.split("test")
    test_images = task_data.split("test").images
    with run.clock.stage("predict"):
        started = time.perf_counter()
        predictions = predict_standard(model, test_images)
        if model.task == "classification":  # the first pass warmed up: time one steady pass
            started = time.perf_counter()
            predictions = predict_standard(model, test_images)
    infer_ms = 1000 * (time.perf_counter() - started) / max(1, len(test))
    row["params"] = dict(scheme.params)
    row["utility"] = decoded_predictions(predictions).metrics(test)

    pictures: dict[str, np.ndarray] = {"original": test.images[:GRID_IMAGES]}
    if scheme.invertible:
        with run.clock.stage("recover"):
            recovered = scheme.recover(views["test"], key=run.key)
            row["recovery"] = image_similarity(test.images, recovered)
            pictures["key-holder recovery"] = recovered[:GRID_IMAGES]
            # An attacker who bypasses the fingerprint check and decodes with a key of its own.
            row["wrong_key"] = image_similarity(
                test.images, scheme.recover_bypassing_check(views["test"], run.wrong_key))

    image_attacks(run.spec, scheme, row, pictures, train, test, views, run.budget, seed,
                  spare=public_images(run.data), clock=run.clock, cache=run.cache)
    view_bytes = views["test"].nbytes / len(views["test"])
    row["cost"] = {"fit_s": run.fit_s, "protect_ms_per_image": protect_ms,
                   "train_s": model.train_s, "infer_ms_per_image": infer_ms,
                   "view_bytes_per_image": view_bytes,
                   "plain_bytes_per_image": float(np.prod(test.image_shape))}  # uint8 pixels
    row["_pictures"] = pictures
    return row


PUBLIC_SPLIT = "val"


def public_images(data: ImageSet) -> ImageSet | None:
    """The bench's stand-in for a public or consented image set (fesf's hosts): the
    validation split, which the owner's patients (train and test, the only images
    the third-party attack counts as the owner's) never include."""
    return data.split(PUBLIC_SPLIT) if PUBLIC_SPLIT in data.split_names else None


def run_scheme(spec: SchemeSpec, data: ImageSet, budget: BenchBudget, seed: int, *,
               cache: BenchCache | None = None) -> dict[str, Any]:
    """One scorecard row, plus the images the report shows: the scheme's protocol runs
    the same workflow as the command line (release, train, predict, decode).

    With a ``cache``, the owner's fit (and the shadow attacker's, under its own key) is
    reused where the same data, scheme, parameters, seed, key and code made one, and a
    scheme that fits nothing reuses its whole row; ``cached`` lists what was reused.
    """
    from medveil.protocols import BenchRun, get_protocol

    victim_key = seeded_key("victim", seed)
    wrong_key = seeded_key("wrong", seed)
    scheme = spec.create(budget=budget)
    clock = StageClock()
    whole_row = None
    if cache is not None and not scheme.needs_fit:
        whole_row = cache.row_address(data, spec, run_header(data, budget, seed), seed)
        with clock.stage("row_from_cache"):
            row = cache.load_row(whole_row)
        if row is not None:
            return {**row, "timing": clock.figures(), "cached": ["row"]}
    protocol = get_protocol(scheme.protocol)
    row: dict[str, Any] = {"scheme": spec.label, "protocol": protocol.name,
                           "params": dict(scheme.params), "status": "ok",
                           "error": None, "utility": None, "recovery": None, "wrong_key": None,
                           "attacks": {}, "cost": {}, "cached": []}
    with clock.stage("fit"):
        scheme, hit = fit_scheme(cache, "owner_fit", scheme, scheme.fit_data(data),
                                 key=victim_key, seed=seed, public=public_images(data))
        row["cached"] += ["fit"] if hit else []
    row = protocol.bench_row(BenchRun(spec=spec, scheme=scheme, row=row, data=data,
                                      budget=budget, seed=seed, key=victim_key,
                                      wrong_key=wrong_key, fit_s=clock.seconds["fit"],
                                      clock=clock, cache=cache))
    row["timing"] = clock.figures()
    if whole_row is not None and row["status"] == "ok":
        cache.save_row(whole_row, row)
    return row


def image_attacks(spec: SchemeSpec, scheme, row: dict[str, Any],
                  pictures: dict[str, np.ndarray], train: ImageSet, test: ImageSet,
                  views: dict[str, np.ndarray], budget: BenchBudget, seed: int, *,
                  spare: ImageSet | None = None, clock: StageClock | None = None,
                  cache: BenchCache | None = None) -> None:
    """The shared suite (and the scheme's own attacks) on the views, into ``row``, then
    a verdict per threat actor (``spare``: images that fill a small gallery).

    Victims are the test split. Re-identification queries ``gallery`` of them against
    a gallery of their plaintexts plus distractors the attacker never saw (the other
    test images and the training images outside the largest leak). The leak curve
    refits the inverter on nested leaks of K pairs; its largest K is the headline
    known-plaintext and re-identification figure. ``clock`` times each attack.
    """
    clock = clock or StageClock()
    attack_budget = budget.attacks
    rng = np.random.default_rng(seed + 11)
    order = rng.permutation(len(train))
    sizes = leak_sizes(len(train), attack_budget)
    largest = np.sort(order[:sizes[-1]])
    queries = np.sort(np.random.default_rng(seed).choice(
        len(test), min(attack_budget.gallery, len(test)), replace=False))
    distractors = gallery_distractors(train, test, largest, queries, attack_budget.distractors,
                                      seed, extra=spare)
    victim_pictures = scheme.view_as_image(views["test"])

    with clock.stage("visual"):
        vis = visual(victim_pictures, test.images, public=train.images, masks=test.masks)
        row["attacks"]["visual"] = vis.figures
        if vis.reconstructions is not None:
            pictures["view"] = vis.reconstructions[:GRID_IMAGES]
            vis.figures["reidentify"] = visual_reidentification(
                vis.reconstructions[queries], test.images[queries], distractors)
            owner = np.concatenate([train.images, test.images])
            third = np.sort(np.random.default_rng(seed + 13).choice(
                len(test), min(attack_budget.third_party_victims, len(test)), replace=False))
            row["attacks"]["third_parties"] = third_parties(
                vis.reconstructions[third], owner, len(train) + third)

    extra = scheme.attack_inverters()
    curve, best_kp = [], None
    for k in sizes:
        leak = np.sort(order[:k])
        with clock.stage(f"known_plaintext_k{k}"):
            kp, inverter = known_plaintext(views["train"][leak], train.images[leak],
                                           views["test"], test.images, budget=attack_budget,
                                           seed=seed, extra=extra)
        with clock.stage(f"reidentify_k{k}"):
            reid = reidentification(inverter, views["train"][leak], train.images[leak],
                                    views["test"][queries], test.images[queries], distractors,
                                    budget=attack_budget, seed=seed)
        curve.append({**{f: kp.figures[f] for f in ("pairs", "ssim", "psnr", "method")},
                      "reidentify": reid.figures})
        best_kp = kp
    row["attacks"]["known_plaintext"] = best_kp.figures
    row["attacks"]["reidentify"] = curve[-1]["reidentify"]
    row["attacks"]["leak_curve"] = curve

    with clock.stage("shadow_key"):  # the shadow fit, its inverter and re-identification
        shadow = shadow_key(lambda: create(spec.name, **row["params"]), train, views["test"],
                            test.images, budget=attack_budget, seed=seed, cache=cache)
        if shadow.fit_cached:
            row.setdefault("cached", []).append("shadow_fit")
        row["attacks"]["shadow_key"] = shadow.result.figures
        n_own = min(sizes[-1], len(shadow.own_views))
        shadow.result.figures["reidentify"] = reidentification(
            shadow.inverter, shadow.own_views[:n_own], shadow.own_images[:n_own],
            views["test"][queries], test.images[queries], distractors, budget=attack_budget,
            seed=seed).figures
    with clock.stage("scheme_attacks"):
        row["attacks"].update(scheme.extra_attacks(
            views["test"], test.images, leaked_views=views["train"][largest],
            leaked_images=train.images[largest], budget=attack_budget, seed=seed))
    with_advantages(row["attacks"], attacker_floor(train.images, test.images))
    row["verdicts"] = actor_verdicts(row["attacks"])
    best = max((best_kp, shadow.result), key=lambda r: r.figures["ssim"])
    pictures["best attack"] = best.reconstructions[:GRID_IMAGES]


def gallery_distractors(train: ImageSet, test: ImageSet, leaked: np.ndarray,
                        queries: np.ndarray, limit: int, seed: int,
                        extra: ImageSet | None = None) -> np.ndarray:
    """Gallery distractors the attacker never saw: test images that are not queries and
    training images outside the largest leak, at most ``limit``, seeded; where those
    fall short of ``limit`` (small sets), images of ``extra`` (the validation split)
    fill up."""
    pool = np.concatenate([np.delete(test.images, queries, axis=0),
                           np.delete(train.images, leaked, axis=0)])
    if len(pool) > limit:
        pool = pool[np.sort(np.random.default_rng(seed + 17).choice(len(pool), limit,
                                                                     replace=False))]
    elif extra is not None and len(extra):
        pool = np.concatenate([pool, extra.images[:limit - len(pool)]])
    return pool


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


BENCH_FILES = ("scorecard.json", "scorecard.partial.json", "report.md", "sweep.json")


def _bench_folder(out: str | os.PathLike[str]) -> Path:
    """The bench's output folder (0700: its report may hold patient images); an existing
    folder must be empty or a former bench's, never a user's folder to write into."""
    out = Path(out)
    if out.is_symlink() or out.is_file():
        raise ConfigError(f"--out {out} is a file or a link; give a folder for the bench")
    if out.is_dir():
        if any(out.iterdir()) and not any((out / name).is_file() for name in BENCH_FILES):
            raise ConfigError(f"--out {out} is a folder with other files in it, not a former "
                              "bench's output; give a new or empty folder")
    else:
        if not out.parent.is_dir():
            raise ConfigError(f"--out: folder {out.parent} does not exist; create it first")
        out.mkdir(mode=0o700)
    os.chmod(out, 0o700)
    return out


@dataclass
class _Run:
    """One data set with one seed of a bench (a sweep has several): its folder, the
    rows it must compute and those it has."""

    out: Path
    dataset: ImageSet
    seed: int
    specs: list[SchemeSpec]
    header: dict[str, Any]
    rows: dict[str, dict[str, Any]]

    def write_partial(self) -> None:
        """Rows so far, in the order of ``specs`` (a full bench takes more than an hour
        here: ``--resume`` picks them up after a crash or a stop)."""
        partial = {**self.header, "results": [{k: v for k, v in r.items()
                                               if not k.startswith("_")}
                                              for r in self.ordered()]}
        atomic_write_bytes(self.out / "scorecard.partial.json",
                           (json.dumps(partial, indent=2, default=float) + "\n").encode(),
                           check=False)

    def ordered(self) -> list[dict[str, Any]]:
        return [self.rows[s.label] for s in self.specs if s.label in self.rows]


def _run_folders(out: Path, combos: list[tuple[ImageSet, int]]) -> list[Path]:
    """One combination writes into ``out`` itself; a sweep gives each data set and seed
    a folder of its own under ``out`` (named after both) and lists them in sweep.json."""
    if len(combos) == 1:
        return [out]
    folders, seen = [], set()
    for dataset, seed in combos:
        stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in dataset.name)
        name = f"{stem}-seed{seed}"
        while name in seen:
            name += "-again"
        seen.add(name)
        folders.append(_bench_folder(out / name))
    return folders


def run_bench(*, data: str | os.PathLike[str] | None = None, schemes: str = "all",
              quick: bool = False, seed: int = 0, out: str | os.PathLike[str] = "bench-output",
              progress: bool = True, read_options: dict[str, Any] | None = None,
              budget: BenchBudget | str | None = None, resume: bool = False,
              pictures: bool = True, executor: str = "inprocess",
              workers: int | None = None,
              cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run the benchmark on one data set with one seed and write scorecard.json,
    report.md, report.html and pictures into ``out`` (:func:`run_sweep`)."""
    return run_sweep(data=[data], schemes=schemes, quick=quick, seeds=[seed], out=out,
                     progress=progress, read_options=read_options, budget=budget,
                     resume=resume, pictures=pictures, executor=executor,
                     workers=workers, cache=cache)[0]


def run_sweep(*, data: list[str | os.PathLike[str] | None] | None = None,
              schemes: str = "all", quick: bool = False, seeds: list[int] | None = None,
              out: str | os.PathLike[str] = "bench-output", progress: bool = True,
              read_options: dict[str, Any] | None = None,
              budget: BenchBudget | str | None = None, resume: bool = False,
              pictures: bool = True, executor: str = "inprocess",
              workers: int | None = None,
              cache: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The benchmark of every data set with every seed: one scorecard each.

    Every row of every combination is one task for the ``executor``
    (:mod:`medveil.executors`: ``inprocess``, ``processes`` or ``ray``); a row is
    written into its combination's partial scorecard as it finishes and the
    scorecards do not depend on the executor. With ``resume``, rows that finished
    ``ok`` in an interrupted run into the same ``out`` (its
    ``scorecard.partial.json``) are kept instead of run again, provided the data
    set, seed and budget match; they are marked ``resumed`` and have no pictures in
    the report. With a ``cache`` folder (:mod:`medveil.cache`), fits and rows that an
    earlier run made from the same inputs are reused; each row's ``cached`` says which.
    """
    from medveil.executors import RowTask, get_executor

    sources = [d if d is not None else DEFAULT_CLASSIFICATION for d in (data or [None])]
    seeds = list(seeds) if seeds else [0]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice ({seeds}); give each seed once")
    all_specs = parse_schemes(schemes)
    if isinstance(budget, str):
        budget = get_budget(budget)
    budget = budget or BenchBudget.for_mode(quick)
    runner = get_executor(executor, workers=workers)
    cache_folder = None if cache is None else str(BenchCache(cache).folder)
    combos = []
    for source in sources:
        for seed in seeds:
            dataset = load_dataset(source, seed=seed, **(read_options or {}))
            if dataset.task == "none":
                raise ConfigError(f"{dataset.name} has neither labels nor masks: nothing to "
                                  "benchmark")
            if "test" not in dataset.split_names:
                raise ConfigError(f"{dataset.name} has no test split to measure on")
            combos.append((subsample_for_budget(dataset, budget, seed), seed))
    out = _bench_folder(out)
    runs = []
    for (dataset, seed), folder in zip(combos, _run_folders(out, combos), strict=True):
        header = run_header(dataset, budget, seed)
        finished = _resumable_rows(folder / "scorecard.partial.json", header) if resume else {}
        specs = _for_task(all_specs, dataset.task, dataset.name,
                          explicit=schemes.strip() != "all")
        rows = {s.label: {**finished[s.label], "resumed": True} for s in specs
                if s.label in finished}
        runs.append(_Run(folder, dataset, seed, specs, header, rows))
    if len(runs) > 1:
        index = {"sweep": [{"dataset": r.dataset.name, "seed": r.seed,
                            "folder": r.out.name} for r in runs]}
        atomic_write_bytes(out / "sweep.json", (json.dumps(index, indent=2) + "\n").encode(),
                           check=False)
    todo = [(run, spec) for run in runs for spec in run.specs if spec.label not in run.rows]
    # the longest rows first (the scheme's measured cost under this budget), so that
    # workers finish together
    todo.sort(key=lambda item: -get_scheme_class(item[1].name).row_cost(budget.mode))
    started = time.perf_counter()
    with progress_bar(progress) as bar:
        task = bar.add_task(f"bench ({runner.name})", total=len(todo))

        def done(index: int, row: dict[str, Any]) -> None:
            run, spec = todo[index]
            run.rows[spec.label] = row
            run.write_partial()
            bar.update(task, advance=1, description=f"bench: {spec.label} done")

        runner.run([RowTask(spec, run.dataset, budget, run.seed, cache_folder)
                    for run, spec in todo], done)
    wall_s = time.perf_counter() - started
    executor_figures = {"name": runner.name, "workers": runner.workers,
                        "threads_per_worker": runner.threads}
    return [_finish(run, budget, wall_s, executor_figures, pictures=pictures) for run in runs]


def _finish(run: _Run, budget: BenchBudget, wall_s: float, executor: dict[str, Any], *,
            pictures: bool) -> dict[str, Any]:
    """The scorecard of one combination: validated, written with its report."""
    from medveil.report import write_report

    rows, dataset = run.ordered(), run.dataset
    grids = {row["scheme"]: row.pop("_pictures", None) for row in rows}
    if not pictures:  # a report that holds no patient image
        grids = {name: None for name in grids}
    tracebacks = {row["scheme"]: row.pop("_traceback", None) for row in rows}
    scorecard = {
        "schema": SCORECARD_SCHEMA,
        "medveil_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": budget.mode,
        "seed": run.seed,
        "machine": {**_machine(), "executor": executor},
        "dataset": {"name": dataset.name, "task": dataset.task,
                    "image_size": list(dataset.image_shape[1:]),
                    "n_train": int((dataset.splits == "train").sum()),
                    "n_test": int((dataset.splits == "test").sum())},
        "wall_s": wall_s,
        "results": rows,
    }
    validate_scorecard(scorecard)
    out = run.out
    (out / "scorecard.partial.json").unlink(missing_ok=True)
    atomic_write_bytes(out / "scorecard.json", (json.dumps(scorecard, indent=2) + "\n").encode(),
                       check=False)
    write_report(out, scorecard, grids)
    failed = {n: tb for n, tb in tracebacks.items() if tb}
    if failed:
        atomic_write_bytes(out / "errors.log",
                           "\n\n".join(f"== {n}\n{tb}" for n, tb in failed.items()).encode(),
                           check=False)
    return scorecard
