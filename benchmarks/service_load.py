"""Load on `medveil serve`, against 127.0.0.1 only, bounded in count and time.

Starts a server on a free local port over a fresh data folder, pushes one ckks
release (a small test split of cxr-demo, so that a predict job is short), then
runs CLIENTS concurrent clients (threads, one HTTP session each), each sending
REQUESTS requests: a ckks predict every PREDICT_EVERY-th (submit, then wait for
the job to finish: its latency includes the queue, one worker), status requests
otherwise. Writes p50 / p95 latency per kind, throughput, the error count and the
ckks per-image latency through the service (job start to finish) against the
local `predict` on the same release, as JSON.

    python benchmarks/service_load.py --out runs/service-load.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

MEDVEIL = [sys.executable, "-m", "medveil.cli"]


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run([*MEDVEIL, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"medveil {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--predict-every", type=int, default=10)
    parser.add_argument("--test-images", type=int, default=4)
    parser.add_argument("--time-limit-s", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=Path("runs/service-load.json"))
    args = parser.parse_args()

    import httpx

    from medveil.data import load_dataset
    from medveil.service.local import LocalServer
    from medveil.workflow import predict

    root = Path(tempfile.mkdtemp(prefix="medveil-load-"))
    data = load_dataset("cxr-demo")
    arrays = {}
    for split, n in (("train", 432), ("val", 48), ("test", args.test_images)):
        part = data.split(split)
        arrays[f"{split}_images"] = (part.images[:n, 0] * 255).round().astype(np.uint8)
        arrays[f"{split}_labels"] = part.labels[:n].astype(np.uint8)
    np.savez(root / "cxr.npz", **arrays)
    _run("keygen", "owner.key", cwd=root)
    _run("protect", "--scheme", "ckks", "--key", "owner.key", "--data", "cxr.npz", "--out",
         "release", "--state", "state", "--budget", "smoke", cwd=root)
    local = [predict(None, str(root / "release"), split="test", out=root / f"local{i}")
             ["ms_per_image"] for i in range(3)]
    _run("serve", "token", "add", "load", "--data-dir", "srv", "--out", "load.token", cwd=root)
    server = LocalServer(root / "srv", cwd=root).start()
    url = server.url
    try:
        release = _run("remote", "push", "--server", url, "--token-file", "load.token",
                       "--data", "release", cwd=root)
        headers = {"authorization": f"Bearer {(root / 'load.token').read_text().strip()}"}
        latencies: dict[str, list[float]] = {"status": [], "predict": []}
        job_ms_per_image: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + args.time_limit_s

        def client(index: int) -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=600) as session:
                for n in range(args.requests):
                    if time.monotonic() > deadline:
                        with lock:
                            errors.append(f"client {index}: time limit")
                        return
                    started = time.perf_counter()
                    try:
                        if n % args.predict_every == args.predict_every - 1:
                            job = session.post("/jobs", json={
                                "kind": "predict", "release": release}).raise_for_status()
                            job_id = job.json()["id"]
                            while True:
                                status = session.get(f"/jobs/{job_id}").raise_for_status()
                                if status.json()["status"] in ("done", "failed"):
                                    break
                                time.sleep(0.3)  # as `medveil remote` polls
                            record = status.json()
                            if record["status"] != "done":
                                raise RuntimeError(record["error"])
                            kind = "predict"
                            run_s = (datetime.fromisoformat(record["finished"])
                                     - datetime.fromisoformat(record["started"])
                                     ).total_seconds()
                            with lock:
                                job_ms_per_image.append(1000 * run_s / args.test_images)
                        else:
                            session.get("/releases").raise_for_status()
                            kind = "status"
                    except Exception as exc:  # noqa: BLE001 - counted, not raised
                        with lock:
                            errors.append(f"client {index}: {type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        latencies[kind].append(1000 * (time.perf_counter() - started))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
    finally:
        server.stop()
    done = sum(len(v) for v in latencies.values())
    record = {
        "clients": args.clients, "requests_per_client": args.requests,
        "predict_every": args.predict_every, "test_images": args.test_images,
        "errors": len(errors), "error_examples": errors[:5], "wall_s": wall,
        "throughput_rps": done / wall,
        "latency_ms": {kind: {"n": len(v), "p50": _percentile(v, 50), "p95": _percentile(v, 95)}
                       for kind, v in latencies.items()},
        "ckks_ms_per_image": {"service_job_median": statistics.median(job_ms_per_image)
                              if job_ms_per_image else None,
                              "local_predict_median": statistics.median(local)},
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
    }
    ratio = (record["ckks_ms_per_image"]["service_job_median"] or float("nan")) / \
        record["ckks_ms_per_image"]["local_predict_median"]
    record["ckks_ms_per_image"]["ratio"] = ratio
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
