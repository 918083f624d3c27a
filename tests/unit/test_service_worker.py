"""The worker's watch over a job's child, on the SQLite file and a fork alone (no
workflow): a job the child has recorded done keeps what it made, even while the child
is still exiting when the worker looks; a cancelled one loses it."""

from __future__ import annotations

import threading
import time

from medveil.service import worker
from medveil.service.db import ServiceDB, new_id, now


def _claimed(db: ServiceDB) -> dict:
    db.insert("jobs", id=new_id("job"), centre="a", kind="train", spec="{}", status="queued",
              created=now())
    return db.claim_job(1)


def _fake_run(db, job, *, output_id):
    (db.dir / "models" / f"{output_id}.pt").write_bytes(b"model")
    return "models", {"id": output_id, "protocol": "plain", "centres": ["a"],
                      "releases": [], "created": now()}


def test_a_job_done_while_its_child_exits_keeps_its_model(tmp_path, monkeypatch):
    db = ServiceDB(tmp_path / "srv")
    job = _claimed(db)
    original = worker._child

    def slow_exit(db, job, output_id):  # the child marks the job done, then lingers
        original(db, job, output_id)
        time.sleep(1.0)

    monkeypatch.setattr(worker, "run_job", _fake_run)
    monkeypatch.setattr(worker, "_child", slow_exit)
    worker.supervise(db, job, wall_s=60, poll_s=0.05)
    row = db.get("jobs", job["id"])
    assert row["status"] == "done" and row["output"] == job["output"]
    assert (db.dir / "models" / f"{job['output']}.pt").read_bytes() == b"model"
    assert db.get("models", job["output"]) is not None


def test_a_cancelled_job_loses_what_it_wrote(tmp_path, monkeypatch):
    db = ServiceDB(tmp_path / "srv")
    job = _claimed(db)

    def slow_run(db, job, *, output_id):
        (db.dir / "models" / f"{output_id}.pt").write_bytes(b"partial")
        time.sleep(30)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(worker, "run_job", slow_run)
    threading.Timer(0.5, db.cancel_job, args=(job["id"],)).start()
    started = time.monotonic()
    worker.supervise(db, job, wall_s=60, poll_s=0.05)
    assert time.monotonic() - started < 10
    assert db.get("jobs", job["id"])["status"] == "cancelled"
    assert list((db.dir / "models").iterdir()) == []
