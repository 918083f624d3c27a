"""Load on `medveil serve`, against 127.0.0.1 only, bounded in count and time.

Starts a server on a free local port over a fresh data folder, pushes one ckks
release (a small test split of cxr-demo, so that a predict job is short), then
runs CLIENTS concurrent clients (threads, one HTTP session each), each sending
REQUESTS requests: a ckks predict every PREDICT_EVERY-th (submit, then wait for
the job to finish: its latency includes the queue, one worker), status requests
otherwise. Writes p50 / p95 latency per kind, throughput, the error count and the
ckks per-image latency through the service (job start to finish) against the
local `predict` on the same release, as JSON.

With ``--hostile``, one more centre runs beside the honest clients, in its own
process, until they finish: job specs far over the bounds, of the wrong types and
40 MiB long (and a declared terabyte), uploads over the server's limit (streamed and
declared), sparse and expanding tars (``tests/hostile_tar.py``), and FLOOD threads
sending status requests as fast as the server answers. Every answer it gets is
checked against the one the service owes it (400, 404, 413, 422; a 5xx or a dropped
connection is counted as unexpected); the honest clients' errors must stay 0, and
their p95 wait is set next to a run without the hostile centre (``--baseline``).

    python benchmarks/service_load.py --out runs/service-load.json
    python benchmarks/service_load.py --hostile --baseline runs/service-load.json \
        --out runs/service-load-hostile.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.hostile_tar

MEDVEIL = [sys.executable, "-m", "medveil.cli"]
#: What the service owes each hostile request.
HOSTILE_EXPECTED = {
    "spec_epochs_over_bound": 400, "spec_bad_types": 400, "spec_not_json": 400,
    "spec_deep_nesting": 400, "spec_40MiB_body": 413, "spec_declared_1TiB": 413,
    "upload_over_limit_streamed": 413, "upload_declared_1TiB": 413,
    "tar_gnu_sparse_391MiB": 422, "tar_pax_sparse": 422, "tar_pax_size": 422,
    "tar_declares_8GiB": 413, "flood_status_unknown_job": 404, "flood_releases": 200,
}


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run([*MEDVEIL, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"medveil {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _declared_only(port: int, token: str, path: str, *, length: int, head: bytes) -> int:
    """A request declaring ``length`` bytes, sending ``head`` of them: the status read."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                     f"{token}\r\nContent-Length: {length}\r\n\r\n".encode() + head)
        line = sock.recv(4096).split(b"\r\n")[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else -1


def hostile_centre(url: str, port: int, token: str, limit_bytes: int, flood: int,
                   stop, out: str, time_limit_s: float, oversize: int) -> None:
    """The hostile centre (its own process, so its threads do not share the honest
    clients' interpreter): every case in turn, and ``flood`` status threads, until
    ``stop`` is set; writes each case's answers and latencies to ``out`` (JSON)."""
    import httpx
    from tests.hostile_tar import MiB, declared, end, gnu_sparse, pax_sparse, regular

    fake = "release-" + "0" * 16
    manifest = regular("manifest.json", b"{}")
    tars = {
        "tar_gnu_sparse_391MiB": manifest + gnu_sparse("train.view.npy", stored=b"x" * 100,
                                                       real_size=391 * MiB) + end(),
        "tar_pax_sparse": manifest + pax_sparse("train.view.npy", stored=b"x" * 100,
                                                real_size=195 * MiB) + end(),
        "tar_pax_size": manifest + regular("train.view.npy", b"x", pax={"size": str(2**30)})
        + end(),
        "tar_declares_8GiB": manifest + declared("train.view.npy", data=b"x" * 100,
                                                 size=2**33) + end(),
    }
    big_spec = json.dumps({"kind": "predict", "release": fake,
                           "split": "x" * 40 * 2**20}).encode()
    auth = {"authorization": f"Bearer {token}"}
    answers: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit_s

    def going() -> bool:
        return not stop.is_set() and time.monotonic() < deadline

    def record(kind: str, call) -> None:
        started = time.perf_counter()
        try:
            code = call()
        except Exception:  # noqa: BLE001 - a dropped connection is an unexpected answer
            code = -1
        with lock:
            answers.append((kind, code, 1000 * (time.perf_counter() - started)))

    def over_limit():
        for _ in range(limit_bytes // MiB + 8):
            yield b"\0" * MiB

    def specs_and_uploads() -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=600) as session:
            def post(path: str, **kwargs) -> int:
                return session.post(path, **kwargs).status_code

            cases = [
                ("spec_epochs_over_bound", lambda: post("/jobs", json={
                    "kind": "train", "releases": [fake], "epochs": 10**12})),
                ("spec_bad_types", lambda: post("/jobs", json={
                    "kind": "train", "releases": fake, "epochs": "abc", "seed": [1]})),
                ("spec_not_json", lambda: post("/jobs", content=b"\xff{kind: train")),
                ("spec_deep_nesting", lambda: post("/jobs", content=b"[" * 60000)),
                ("spec_40MiB_body", lambda: post("/jobs", content=big_spec, headers={
                    "content-type": "application/json"})),
                ("spec_declared_1TiB", lambda: _declared_only(
                    port, token, "/jobs", length=2**40, head=b'{"kind":')),
                ("upload_over_limit_streamed", lambda: post("/releases",
                                                            content=over_limit())),
                ("upload_declared_1TiB", lambda: _declared_only(
                    port, token, "/releases", length=2**40, head=b"\0" * 1024)),
                *[(name, lambda blob=blob: post("/releases", content=blob, headers={
                    "content-type": "application/x-tar"})) for name, blob in tars.items()],
            ]
            cycle = 0
            while going():
                for kind, call in cases:
                    if not going():
                        return
                    if kind == "upload_over_limit_streamed" and cycle >= oversize:
                        continue
                    record(kind, call)
                cycle += 1

    def flooder(index: int) -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=600) as session:
            n = 0
            while going():
                if n % 2:
                    record("flood_releases", lambda: session.get("/releases").status_code)
                else:
                    job = f"job-{secrets.token_hex(8)}"
                    record("flood_status_unknown_job",
                           lambda job=job: session.get(f"/jobs/{job}").status_code)
                n += 1

    threads = [threading.Thread(target=specs_and_uploads)] + [
        threading.Thread(target=flooder, args=(i,)) for i in range(flood)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    cases = {}
    for kind, expected in HOSTILE_EXPECTED.items():
        mine = [a for a in answers if a[0] == kind]
        codes = Counter(code for _, code, _ in mine)
        cases[kind] = {"n": len(mine), "expected": expected,
                       "answers": {str(c): n for c, n in sorted(codes.items())},
                       "unexpected": sum(n for c, n in codes.items() if c != expected),
                       "p50_ms": _percentile([ms for *_, ms in mine], 50),
                       "p95_ms": _percentile([ms for *_, ms in mine], 95)}
    Path(out).write_text(json.dumps({
        "requests": len(answers), "wall_s": wall, "rps": len(answers) / wall,
        "flood_threads": flood, "unexpected": sum(c["unexpected"] for c in cases.values()),
        "cases": cases}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--predict-every", type=int, default=10)
    parser.add_argument("--test-images", type=int, default=4)
    parser.add_argument("--time-limit-s", type=float, default=1800)
    parser.add_argument("--max-upload-mb", type=int, default=1024,
                        help="The server's upload limit (the ckks release is about 643 MiB; "
                             "the hostile centre sends more).")
    parser.add_argument("--oversize-uploads", type=int, default=2,
                        help="Uploads the hostile centre streams past the limit (each is "
                             "--max-upload-mb + 8 MiB on the wire, written to the server's "
                             "disk up to the limit); the other cycles declare a terabyte.")
    parser.add_argument("--hostile", action="store_true",
                        help="Run a hostile centre beside the honest clients.")
    parser.add_argument("--flood", type=int, default=2,
                        help="The hostile centre's status-flood threads.")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="A run without --hostile, to set the honest figures against.")
    parser.add_argument("--out", type=Path, default=Path("runs/service-load.json"))
    args = parser.parse_args()
    baseline = None
    if args.baseline is not None:
        baseline = json.loads(args.baseline.read_text())
        if baseline.get("hostile"):
            raise SystemExit(f"--baseline {args.baseline} is a run with --hostile; give one "
                             "without it")

    root = Path(tempfile.mkdtemp(prefix="medveil-load-"))
    try:  # the release (about 643 MiB) and the server's copy of it are not kept
        record = measure(args, root, baseline)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def measure(args: argparse.Namespace, root: Path, baseline: dict | None) -> dict:
    """The run, in the scratch folder ``root``: the record written as JSON."""
    import httpx

    from medveil.data import load_dataset
    from medveil.service.local import LocalServer
    from medveil.workflow import predict

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
    _run("serve", "token", "add", "hostile", "--data-dir", "srv", "--out", "hostile.token",
         cwd=root)
    server = LocalServer(root / "srv", cwd=root, max_upload_mb=args.max_upload_mb).start()
    url = server.url
    hostile = None
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
        if args.hostile:
            spawn = multiprocessing.get_context("spawn")
            stop = spawn.Event()
            hostile = spawn.Process(target=hostile_centre, args=(
                url, server.port, (root / "hostile.token").read_text().strip(),
                args.max_upload_mb * 2**20, args.flood, stop, str(root / "hostile.json"),
                args.time_limit_s, args.oversize_uploads))
            hostile.start()
            time.sleep(2.0)  # under way before the honest clients start
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        if hostile is not None:
            stop.set()
            hostile.join(timeout=600)
            if hostile.is_alive():
                hostile.kill()
        health = httpx.get(f"{url}/health").json()
    finally:
        if hostile is not None and hostile.is_alive():
            hostile.kill()
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
    record["server"] = {"max_upload_mb": args.max_upload_mb, "health_after": health}
    record["hostile"] = None
    if args.hostile:
        hostile_path = root / "hostile.json"
        record["hostile"] = (json.loads(hostile_path.read_text()) if hostile_path.exists()
                             else {"error": "the hostile centre wrote no report"})
    if baseline is not None:
        record["baseline"] = {
            "file": str(args.baseline), "errors": baseline["errors"],
            "throughput_rps": baseline["throughput_rps"],
            "latency_ms": baseline["latency_ms"],
            "p95_ratio": {kind: record["latency_ms"][kind]["p95"]
                          / baseline["latency_ms"][kind]["p95"]
                          for kind in record["latency_ms"]}}
    record["command"] = " ".join(["python", *sys.argv])
    return record


if __name__ == "__main__":
    main()
