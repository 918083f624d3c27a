"""`medveil bench`: every chosen scheme through one pipeline into one scorecard.

For each scheme: the owner fits it on the training split and protects every
split with the victim key; the processor's task runs through the scheme's
protocol (the calls the command line makes) with the same model and budget as
``plain``; the attack suite attacks the held-out test views; key holders' recovery and a
wrong-key decode are measured for invertible schemes. A scheme that fails
becomes a row with ``status: error`` and the others go on.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medveil import __version__
from medveil.atomic import atomic_write_bytes
from medveil.bench_row import SchemeSpec, run_header, run_scheme  # noqa: F401  (API)
from medveil.budgets import BenchBudget, get_budget
from medveil.cache import BenchCache
from medveil.comparison import add_paired_comparisons
from medveil.data import ImageSet, load_dataset
from medveil.data.bundled import DEFAULT_CLASSIFICATION
from medveil.errors import ConfigError
from medveil.progress import progress_bar
from medveil.schemes import available_schemes, get_scheme_class
from medveil.schemes.base import check_params

SCORECARD_SCHEMA = "medveil.scorecard/10"
SCHEMA_FILE = Path(__file__).parent / "scorecard.schema.json"


def validate_scorecard(scorecard: dict[str, Any]) -> None:
    """Raise if ``scorecard`` breaks the output contract (scorecard.schema.json)."""
    import jsonschema

    jsonschema.validate(scorecard, json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


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
    rows = {row["scheme"]: row for row in partial["results"] if row.get("status") == "ok"}
    per_image = _read_per_image(path.parent / PER_IMAGE_FILE)
    for label, row in rows.items():
        if label in per_image:
            row["_per_image"] = per_image[label]
    return rows


#: each finished row's per-image outcomes (the paired comparisons need them on resume)
PER_IMAGE_FILE = "per_image.npz"
BENCH_FILES = ("scorecard.json", "scorecard.partial.json", "report.md", "sweep.json",
               "summary.json", PER_IMAGE_FILE)


def _read_per_image(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{row label: {name: array}}`` from the bench's per-image file (none: empty)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            found: dict[str, dict[str, np.ndarray]] = {}
            for name in archive.files:
                label, _, field = name.rpartition("/")
                found.setdefault(label, {})[field] = archive[name]
            return found
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} to resume ({exc}); delete it or drop "
                          "--resume") from exc


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
        buffer = io.BytesIO()
        np.savez(buffer, **{f"{label}/{name}": array for label, row in self.rows.items()
                            for name, array in (row.get("_per_image") or {}).items()})
        atomic_write_bytes(self.out / PER_IMAGE_FILE, buffer.getvalue(), check=False)

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
    cards = [_finish(run, budget, wall_s, executor_figures, pictures=pictures) for run in runs]
    if len(runs) > 1:
        from medveil.sweep_summary import write_summary

        write_summary(out, cards)
    return cards


def _finish(run: _Run, budget: BenchBudget, wall_s: float, executor: dict[str, Any], *,
            pictures: bool) -> dict[str, Any]:
    """The scorecard of one combination: validated, written with its report."""
    from medveil.report import write_report

    rows, dataset = run.ordered(), run.dataset
    grids = {row["scheme"]: row.pop("_pictures", None) for row in rows}
    if not pictures:  # a report that holds no patient image
        grids = {name: None for name in grids}
    tracebacks = {row["scheme"]: row.pop("_traceback", None) for row in rows}
    per_image = {row["scheme"]: row.pop("_per_image", None) for row in rows}
    add_paired_comparisons(rows, per_image, labels=dataset.split("test").labels,
                           seed=run.seed)
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
