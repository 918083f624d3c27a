"""The service's worker process: runs queued jobs, one at a time, never in a request.

It calls the same workflow functions as the command line (``workflow.train``,
``workflow.predict``) on the releases under the data folder, so a job gives what
`medveil train` / `medveil predict` give on the same files, seed and budget. It
dies with the server (``PR_SET_PDEATHSIG``): an orphan never finishes a job a
restarted server has already reported failed. The server supervises it
(``medveil.service.pool``): it says "ready" on ``--ready-fd`` once it can run a
job, and if it dies, the server fails the job it ran and starts another worker.
Jobs are claimed round-robin by centre (``db.QUEUE``).

Each job runs in a child forked for it (the workflow is imported once, before any
fork), which the worker watches: a job its centre cancels (``DELETE /jobs/ID``)
or one past the wall-time limit (``limits.MAX_JOB_WALL_S``, ``serve
--max-job-s``) is killed, marked, and what it had written removed, and the worker
is free for the next job. The child records its output and marks the job done in
one transaction, only while the job is still running, so a killed job never
lists a model or results.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from medveil.errors import ConfigError, MedveilError
from medveil.limits import MAX_JOB_WALL_S
from medveil.service.db import ServiceDB, new_id, now


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_job(db: ServiceDB, job: dict[str, Any], *, output_id: str) -> tuple[str, dict[str, Any]]:
    """Run one claimed job, writing what it makes under ``output_id``; returns the table
    and the row that list it (recorded by the caller, with the job's end).

    The spec is checked again (``limits.check_job_spec``): the worker runs only what the
    bounds allow, whatever the database holds."""
    import json

    from medveil.limits import check_job_spec
    from medveil.workflow import predict, train

    spec = check_job_spec(json.loads(job["spec"]))
    if spec.kind == "train":
        releases = [db.get("releases", r) for r in spec.releases]
        if any(r is None for r in releases):
            raise ConfigError("a release of this job is no longer on the service; push it "
                              "again")
        out = db.dir / "models" / f"{output_id}.pt"
        summary = train([str(db.dir / "releases" / r["id"]) for r in releases], out=out,
                        budget=spec.budget, seed=spec.seed, epochs=spec.epochs,
                        steps=spec.steps)
        os.chmod(out, 0o600)
        return "models", {"id": output_id, "protocol": summary["protocol"],
                          "centres": sorted({r["centre"] for r in releases}),
                          "releases": [r["id"] for r in releases], "created": now()}
    release = db.get("releases", spec.release)
    if release is None:
        raise ConfigError(f"release {spec.release} is no longer on the service; push it again")
    model = None if spec.model is None else db.dir / "models" / f"{spec.model}.pt"
    predict(model, str(db.dir / "releases" / release["id"]), split=spec.split,
            out=db.dir / "results" / output_id)
    return "results", {"id": output_id, "centre": job["centre"], "job": job["id"],
                       "release": release["id"], "model": spec.model, "split": spec.split,
                       "created": now()}


def _output_id(job: dict[str, Any]) -> str:
    """The id the claim gave what the job makes (a fresh one for a row claimed before
    claims gave one)."""
    return job.get("output") or new_id("model" if job["kind"] == "train" else "results")


def remove_output(db: ServiceDB, output_id: str) -> None:
    """What a killed job wrote: its output and the temporary siblings it was writing
    (``.NAME.tmp-PID-RANDOM``); the id is fresh, so nothing else bears it."""
    own = re.compile(rf"\.?{re.escape(output_id)}(\.pt)?(\.(tmp|old)-\d+-[0-9a-f]{{8}})?")
    for folder in (db.dir / "models", db.dir / "results"):
        for entry in folder.iterdir():
            if own.fullmatch(entry.name):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _child(db: ServiceDB, job: dict[str, Any], output_id: str) -> None:
    """In the forked child: run the job, record its end (only while it runs)."""
    try:
        table, row = run_job(db, job, output_id=output_id)
        if not db.complete_job(job["id"], output=output_id, table=table, row=row):
            remove_output(db, output_id)  # cancelled or timed out meanwhile
    except MedveilError as exc:
        db.end_job(job["id"], status="failed", error=" ".join(str(exc).split()))
        remove_output(db, output_id)
    except Exception as exc:  # noqa: BLE001 - a failed job, not a dead worker
        db.end_job(job["id"], status="failed",
                   error=f"internal error: {type(exc).__name__}: {exc}")
        remove_output(db, output_id)
        traceback.print_exc(file=sys.stderr)


def _kill(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.waitpid(pid, 0)[1]


def supervise(db: ServiceDB, job: dict[str, Any], *, wall_s: float,
              poll_s: float = 0.2) -> None:
    """Run ``job`` in a forked child until it ends, is cancelled or runs past ``wall_s``."""
    output_id = _output_id(job)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the worker's loop
        code = 0
        try:
            _die_with_parent()
            if os.getppid() == parent:
                _child(db, job, output_id)
        except BaseException:  # noqa: BLE001 - reported by the worker from the exit code
            code = 1
        finally:
            os._exit(code)
    started = time.monotonic()
    while True:
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            break
        row = db.get("jobs", job["id"])
        if row is not None and row["status"] in ("done", "failed"):
            # the child recorded the job's end and is exiting: what it made stays
            os.waitpid(pid, 0)
            return
        if row is None or row["status"] != "running":  # its centre cancelled it
            _kill(pid)
            remove_output(db, output_id)
            return
        if time.monotonic() - started > wall_s:
            _kill(pid)
            if db.end_job(job["id"], status="failed", error=(
                    f"the job ran past this service's limit of {wall_s:.0f} s and was "
                    "stopped; ask for a smaller budget (--epochs, --steps) or ask the "
                    "operator to raise --max-job-s")):
                remove_output(db, output_id)
            return
        time.sleep(poll_s)
    if os.waitstatus_to_exitcode(status) != 0 and db.end_job(
            job["id"], status="failed", error=f"the job's process ended unexpectedly (exit "
                                              f"status {os.waitstatus_to_exitcode(status)}, "
                                              "out of memory?); submit it again"):
        remove_output(db, output_id)


def serve_jobs(data_dir: str | os.PathLike[str], *, poll_s: float = 0.2,
               wall_s: float = MAX_JOB_WALL_S, once: bool = False,
               ready_fd: int | None = None) -> None:
    """Claim and run jobs until the parent (the server) goes away. Once ready to run one
    (the workflow imported), says so on ``ready_fd`` (the server's supervisor reads it)."""
    import medveil.workflow  # noqa: F401 - imported once, before the forks that run jobs

    db = ServiceDB(data_dir)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    parent = os.getppid()
    while os.getppid() == parent:
        job = db.claim_job(os.getpid())
        if job is None:
            if once:
                return
            time.sleep(poll_s)
            continue
        supervise(db, job, wall_s=wall_s, poll_s=poll_s)


def main() -> None:
    parser = argparse.ArgumentParser(description="medveil service worker")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--max-job-s", type=float, default=MAX_JOB_WALL_S)
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args()
    _die_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    serve_jobs(args.data_dir, wall_s=args.max_job_s, ready_fd=args.ready_fd)


if __name__ == "__main__":
    main()
