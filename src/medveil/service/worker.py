"""The service's worker process: runs queued jobs, one at a time, never in a request.

It calls the same workflow functions as the command line (``workflow.train``,
``workflow.predict``) on the releases under the data folder, so a job gives what
`medveil train` / `medveil predict` give on the same files, seed and budget. It
dies with the server (``PR_SET_PDEATHSIG``): an orphan never finishes a job a
restarted server has already reported failed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from medveil.errors import MedveilError
from medveil.service.db import ServiceDB, new_id, now


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_job(db: ServiceDB, job: dict[str, Any]) -> str:
    """Run one claimed job; returns the id of what it made (a model or a results set)."""
    import json

    from medveil.workflow import predict, train

    spec = json.loads(job["spec"])
    if job["kind"] == "train":
        releases = [db.get("releases", r) for r in spec["releases"]]
        model_id = new_id("model")
        out = db.dir / "models" / f"{model_id}.pt"
        summary = train([str(db.dir / "releases" / r["id"]) for r in releases], out=out,
                        budget=spec.get("budget", "full"), seed=int(spec.get("seed", 0)),
                        epochs=spec.get("epochs"), steps=spec.get("steps"))
        os.chmod(out, 0o600)
        db.insert("models", id=model_id, protocol=summary["protocol"],
                  centres=sorted({r["centre"] for r in releases}),
                  releases=[r["id"] for r in releases], created=now())
        return model_id
    release = db.get("releases", spec["release"])
    model = None if spec.get("model") is None else db.dir / "models" / f"{spec['model']}.pt"
    result_id = new_id("results")
    predict(model, str(db.dir / "releases" / release["id"]), split=spec.get("split", "test"),
            out=db.dir / "results" / result_id)
    db.insert("results", id=result_id, centre=job["centre"], job=job["id"],
              release=release["id"], model=spec.get("model"), split=spec.get("split", "test"),
              created=now())
    return result_id


def serve_jobs(data_dir: str | os.PathLike[str], *, poll_s: float = 0.2,
               once: bool = False) -> None:
    """Claim and run jobs until the parent (the server) goes away."""
    db = ServiceDB(data_dir)
    parent = os.getppid()
    while os.getppid() == parent:
        job = db.claim_job(os.getpid())
        if job is None:
            if once:
                return
            time.sleep(poll_s)
            continue
        try:
            output = run_job(db, job)
            db.update_job(job["id"], status="done", output=output, finished=now())
        except MedveilError as exc:
            db.update_job(job["id"], status="failed", finished=now(),
                          error=" ".join(str(exc).split()))
        except Exception as exc:  # noqa: BLE001 - a failed job, not a dead worker
            db.update_job(job["id"], status="failed", finished=now(),
                          error=f"internal error: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description="medveil service worker")
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    _die_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    serve_jobs(args.data_dir)


if __name__ == "__main__":
    main()
