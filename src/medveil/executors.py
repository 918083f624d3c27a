"""Where the bench's rows run: in this process, in local worker processes, or on Ray.

A row (one scheme on one data set with one seed) depends on nothing but its
:class:`RowTask`, so rows are independent tasks: the executor only decides where
they run and hands each finished row back as it finishes (the bench writes it into
the partial scorecard at once). Each worker runs a row with a fixed number of torch
threads, so a row's figures do not depend on which executor ran it.

``inprocess`` (the default) runs the rows one after another here. ``processes`` runs
them in ``workers`` spawned local processes, the cores shared between them (on a
small machine two one-thread rows use the cores better than one two-thread row: the
small networks here do not scale over threads). ``ray`` sends them to a Ray cluster
(``pip install medveil[cluster]``; ``RAY_ADDRESS`` names a running cluster, else a
local instance starts), the data set put once in its object store.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from medveil.errors import ConfigError, MissingDependencyError, unknown_name


@dataclass(frozen=True)
class RowTask:
    """One scorecard row to compute: everything it depends on."""

    spec: Any  # bench_row.SchemeSpec
    dataset: Any  # data.ImageSet, already cut to the budget
    budget: Any  # budgets.BenchBudget
    seed: int
    cache: str | None = None  # the bench cache's folder (cache.BenchCache), if any


RowDone = Callable[[int, dict[str, Any]], None]


def run_row(task: RowTask, threads: int | None = None) -> dict[str, Any]:
    """The row of ``task``, or an ``error`` row (with its traceback) if the scheme fails:
    one failing scheme never stops the others. ``threads`` sets torch's thread count
    first (workers); None leaves this process's setting."""
    from medveil.bench_row import run_scheme
    from medveil.cache import BenchCache
    from medveil.rows import Row
    from medveil.schemes import get_scheme_class

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        row = run_scheme(task.spec, task.dataset, task.budget, task.seed,
                         cache=BenchCache(task.cache) if task.cache else None)
    except Exception as exc:  # noqa: BLE001 - a failing row, not a crash
        row = Row.failed(scheme=task.spec.label,
                         protocol=get_scheme_class(task.spec.name).protocol,
                         params=dict(task.spec.params), error=f"{type(exc).__name__}: {exc}",
                         traceback=traceback.format_exc()).to_dict()
    row["wall_s"] = time.perf_counter() - started
    return row


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


class InProcessExecutor:
    """Rows one after another in this process (the default)."""

    name = "inprocess"

    def __init__(self, *, workers: int = 1) -> None:
        import torch

        self.workers, self.threads = 1, torch.get_num_threads()

    def run(self, tasks: list[RowTask], done: RowDone) -> None:
        for index, task in enumerate(tasks):
            done(index, run_row(task))


class ProcessExecutor:
    """Rows in ``workers`` spawned local processes, the cores shared between them."""

    name = "processes"

    def __init__(self, *, workers: int = 2) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers, self.threads = workers, _threads_per_worker(workers)

    def run(self, tasks: list[RowTask], done: RowDone) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        # spawn, not fork: a forked child inherits torch's thread pools mid-state
        context = multiprocessing.get_context("spawn")
        threads = self.threads
        with ProcessPoolExecutor(max_workers=min(self.workers, max(1, len(tasks))),
                                 mp_context=context) as pool:
            futures = {pool.submit(run_row, task, threads): i for i, task in enumerate(tasks)}
            try:
                for future in as_completed(futures):
                    done(futures[future], future.result())
            except BrokenProcessPool:
                raise ConfigError(
                    "a bench worker process died (out of memory, or killed); the rows that "
                    "finished, if any, are in scorecard.partial.json: rerun with --resume and "
                    "fewer --workers, or --executor inprocess") from None


class RayExecutor:
    """Rows as Ray tasks, one CPU slot each by default; the data sets go into the object
    store once and every row of a data set reads the same copy."""

    name = "ray"

    def __init__(self, *, workers: int = 1) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("--executor ray needs Ray: pip install "
                                         "'medveil[cluster]'") from exc
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers, self.threads = workers, _threads_per_worker(workers)

    def run(self, tasks: list[RowTask], done: RowDone) -> None:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            # RAY_ADDRESS (a running cluster) wins; otherwise a local instance with
            # one CPU slot per worker
            address = os.environ.get("RAY_ADDRESS")
            ray.init(address=address, num_cpus=None if address else self.workers,
                     include_dashboard=False, log_to_driver=False)
        try:
            threads = self.threads
            remote = ray.remote(num_cpus=1)(_ray_row)
            stored: dict[int, Any] = {}
            refs = {}
            for index, task in enumerate(tasks):
                key = id(task.dataset)
                if key not in stored:
                    stored[key] = ray.put(task.dataset)
                light = RowTask(task.spec, None, task.budget, task.seed, task.cache)
                refs[remote.remote(light, stored[key], threads)] = index
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    row = ray.get(ready[0])
                except ray.exceptions.RayError as exc:  # a worker or node lost, not a row
                    raise ConfigError(
                        f"a Ray worker failed ({type(exc).__name__}); the rows that finished, "
                        "if any, are in scorecard.partial.json: rerun with --resume") from None
                done(refs[ready[0]], row)
        finally:
            if started_here:
                ray.shutdown()


def _ray_row(task: RowTask, dataset: Any, threads: int) -> dict[str, Any]:
    return run_row(RowTask(task.spec, dataset, task.budget, task.seed, task.cache), threads)


EXECUTORS = {"inprocess": InProcessExecutor, "processes": ProcessExecutor, "ray": RayExecutor}


def get_executor(name: str, *, workers: int | None = None) -> Any:
    """An executor by name (``inprocess``, ``processes``, ``ray``); an unknown name is a
    clear error with a suggestion. ``workers`` defaults to the machine's cores for
    ``processes`` and ``ray``."""
    if name not in EXECUTORS:
        raise unknown_name("executor", name, list(EXECUTORS))
    return EXECUTORS[name](workers=workers if workers is not None else (os.cpu_count() or 1))


def executor_names() -> Iterable[str]:
    return EXECUTORS.keys()
