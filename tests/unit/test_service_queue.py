"""The service's queue, on its SQLite file alone: workers take jobs round-robin by centre
(the centre that started a job least recently first), `queued_ahead` says the same
order, and a dead worker's jobs (only its own) are failed with their outputs named."""

from __future__ import annotations

import time

from medveil.service.db import ServiceDB, new_id, now


def _queue(db: ServiceDB, centre: str, kind: str = "predict") -> str:
    job = new_id("job")
    db.insert("jobs", id=job, centre=centre, kind=kind, spec="{}", status="queued",
              created=now())
    time.sleep(0.002)  # `created` has millisecond resolution
    return job


def _claim_all(db: ServiceDB) -> list[str]:
    order = []
    while (job := db.claim_job(1)) is not None:
        db.update_job(job["id"], status="done")
        order.append(job["id"])
    return order


def test_one_centre_cannot_hold_the_worker(tmp_path):
    db = ServiceDB(tmp_path / "srv")
    a = [_queue(db, "a") for _ in range(4)]
    b = [_queue(db, "b")]
    c = [_queue(db, "c") for _ in range(2)]
    # the order the workers will take, as each job's status tells it
    expected = [a[0], b[0], c[0], a[1], c[1], a[2], a[3]]
    assert [db.queued_ahead(j) for j in expected] == list(range(7))
    assert _claim_all(db) == expected


def test_the_centre_that_ran_least_recently_goes_first(tmp_path):
    db = ServiceDB(tmp_path / "srv")
    first = _queue(db, "a")
    assert db.claim_job(1)["id"] == first  # a is running: b, never run, goes next
    later_a = [_queue(db, "a") for _ in range(3)]
    b = _queue(db, "b")
    assert db.queued_ahead(b) == 0 and db.queued_ahead(later_a[0]) == 1
    assert db.queued_ahead(first) is None
    assert _claim_all(db) == [b, *later_a]
    # now a started last: b's new job goes before a's, though a queued first
    a5, b2 = _queue(db, "a"), _queue(db, "b")
    assert _claim_all(db) == [b2, a5]


def test_a_claim_names_the_output_and_a_dead_worker_fails_only_its_jobs(tmp_path):
    db = ServiceDB(tmp_path / "srv")
    train, predict = _queue(db, "a", kind="train"), _queue(db, "b")
    mine, theirs = db.claim_job(101), db.claim_job(202)
    assert (mine["id"], theirs["id"]) == (train, predict)
    assert mine["output"].startswith("model-") and theirs["output"].startswith("results-")
    assert db.get("jobs", train)["output"] == mine["output"]
    reason = "the worker died (signal 9); submit the job again"
    assert db.fail_running_jobs(reason, worker_pid=101) == [mine["output"]]
    assert db.get("jobs", train)["status"] == "failed"
    assert db.get("jobs", train)["error"] == reason
    assert db.get("jobs", predict)["status"] == "running"
    assert db.fail_interrupted_jobs() == [theirs["output"]]
    assert "interrupted" in db.get("jobs", predict)["error"]
