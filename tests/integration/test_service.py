"""`medveil serve` as a real uvicorn server on 127.0.0.1, and centres as its clients.

The server runs as its own process on a free port, over a data folder the test
owns; centres use the command line (`medveil remote ...`) and the owner's
commands (`protect`, `decode`) run locally, as a hospital would.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from medveil.data import load_dataset
from medveil.service.local import LocalServer

MEDVEIL = [sys.executable, "-m", "medveil.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def run(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*MEDVEIL, *args], capture_output=True, text=True, cwd=cwd,
                            env=ENV, timeout=900)
    if ok:
        assert result.returncode == 0, f"medveil {' '.join(args)}\n{result.stderr}"
    return result


def server_at(data_dir: Path, *, max_upload_mb: int = 1024) -> LocalServer:
    """`medveil serve` in its own process group (so a SIGKILL takes its worker too)."""
    return LocalServer(data_dir, max_upload_mb=max_upload_mb, env=ENV)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two centres' tokens, an owner's key, a small real data set and a running server."""
    root = tmp_path_factory.mktemp("service")
    cxr = load_dataset("cxr-demo")
    arrays = {}
    for split, n in (("train", 60), ("val", 16), ("test", 24)):
        part = cxr.split(split)
        arrays[f"{split}_images"] = (part.images[:n, 0] * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = part.labels[:n].astype(np.uint8)
    np.savez(root / "cxr.npz", **arrays)
    data_dir = root / "server"
    for centre in ("a", "b"):
        run("serve", "token", "add", centre, "--data-dir", str(data_dir), "--out",
            f"{centre}.token", cwd=root)
    run("keygen", "owner.key", cwd=root)
    server = server_at(data_dir).start()
    yield {"root": root, "server": server, "url": server.url}
    server.stop()


def remote(site, centre: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    command, *rest = args
    return run("remote", command, "--server", site["url"], "--token-file", f"{centre}.token",
               *rest, cwd=site["root"], ok=ok)


def _protect(site, scheme: str, name: str, *extra: str) -> Path:
    run("protect", "--scheme", scheme, "--key", "owner.key", "--data", "cxr.npz", "--out",
        name, "--state", f"{name}-state", *extra, cwd=site["root"])
    return site["root"] / name


def test_plain_through_the_service_equals_the_local_workflow(site):
    root = site["root"]
    _protect(site, "plain", "plain-rel")
    # locally: the functions the command line calls, on the same files
    from medveil.keys import Key
    from medveil.workflow import decode_results, predict, train

    train([str(root / "plain-rel")], out=root / "local.pt", budget="smoke")
    predict(root / "local.pt", str(root / "plain-rel"), split="test", out=root / "local-res")
    decode_results(root / "local-res", key=Key.load(root / "owner.key"),
                   state=root / "plain-rel-state", out=root / "local.csv")
    # through the service
    release_id = remote(site, "a", "push", "--data", "plain-rel").stdout.strip()
    model_id = remote(site, "a", "train", "--release", release_id, "--budget",
                      "smoke").stdout.strip()
    remote(site, "a", "predict", "--release", release_id, "--model", model_id, "--out",
           "wire-res")
    run("decode", "--key", "owner.key", "--state", "plain-rel-state", "--results", "wire-res",
        "--out", "wire.csv", cwd=root)
    local = np.loadtxt(root / "local.csv", delimiter=",", skiprows=1)
    wire = np.loadtxt(root / "wire.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(wire, local, atol=1e-6)


@pytest.fixture(scope="module")
def pushed(site) -> str:
    """Centre a's plain release on the server."""
    if not (site["root"] / "plain-rel-2").exists():
        _protect(site, "plain", "plain-rel-2")
    return remote(site, "a", "push", "--data", "plain-rel-2").stdout.strip()


def test_tokens_and_centres_are_enforced(site, pushed):
    url, release = site["url"], pushed
    assert httpx.get(f"{url}/releases").status_code == 401
    assert httpx.get(f"{url}/releases", headers={"authorization": "Bearer nope"}
                     ).status_code == 401
    b_token = (site["root"] / "b.token").read_text().strip()
    job = httpx.post(f"{url}/jobs", json={"kind": "predict", "release": release},
                     headers={"authorization": f"Bearer {b_token}"})
    assert job.status_code == 404 and "not yours" in job.json()["error"]
    listing = httpx.get(f"{url}/releases", headers={"authorization": f"Bearer {b_token}"})
    assert listing.status_code == 200 and listing.json() == []
    refused = remote(site, "b", "predict", "--release", release, "--out", "stolen", ok=False)
    assert refused.returncode == 2 and "404" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (site["root"] / "stolen").exists()


def test_a_tampered_or_oversize_upload_is_refused(site, pushed):
    root = site["root"]
    rel = root / "plain-rel-2"
    copy = root / "tampered"
    shutil.copytree(rel, copy)
    data = bytearray((copy / "train.view.npy").read_bytes())
    data[-5] ^= 0x01
    (copy / "train.view.npy").write_bytes(bytes(data))
    from medveil.service.transfer import tar_size, tar_stream

    token = (root / "a.token").read_text().strip()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/x-tar"}
    answer = httpx.post(f"{site['url']}/releases", content=b"".join(tar_stream(copy)),
                        headers=headers)
    assert answer.status_code == 422 and "train.view.npy" in answer.json()["error"]
    # a declared terabyte is refused before a byte of it is read
    with socket.create_connection(("127.0.0.1", site["server"].port), timeout=10) as sock:
        sock.sendall(b"POST /releases HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                     + token.encode() + b"\r\nContent-Length: 1099511627776\r\n\r\n"
                     + b"x" * 1024)
        status_line = sock.recv(4096).split(b"\r\n")[0]
    assert b" 413 " in status_line, status_line
    small_dir = root / "small-srv"
    run("serve", "token", "add", "a", "--data-dir", str(small_dir), "--out", "small.token",
        cwd=root)
    small = server_at(small_dir, max_upload_mb=8).start()
    small_headers = {**headers, "authorization":
                     f"Bearer {(root / 'small.token').read_text().strip()}"}
    try:  # a body without a length is cut at the limit: nothing past it is stored
        streamed = httpx.post(f"{small.url}/releases", headers=small_headers,
                              content=(b"\0" * 2**20 for _ in range(16)))
        assert streamed.status_code == 413
        assert list((small_dir / "incoming").iterdir()) == []
    finally:
        small.stop()
    assert tar_size(rel) == len(b"".join(tar_stream(rel)))
    assert list((site["server"].data_dir / "incoming").iterdir()) == []


def test_the_server_keeps_no_secret_and_owner_only_files(site, pushed):
    data_dir = site["server"].data_dir
    key = json.loads((site["root"] / "owner.key").read_text())["key"].encode()
    for token_file in ("a.token", "b.token"):
        assert stat.S_IMODE((site["root"] / token_file).stat().st_mode) == 0o600
    tokens = [(site["root"] / t).read_text().strip().encode() for t in ("a.token", "b.token")]
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        if path.is_file():
            blob = path.read_bytes()
            assert key not in blob and not any(t in blob for t in tokens), path
            assert b"arrays.npz" not in blob and path.name not in ("state.json", "owner.key")


def test_a_server_killed_mid_upload_shows_no_partial_release(site, tmp_path):
    data_dir = tmp_path / "srv"
    run("serve", "token", "add", "a", "--data-dir", str(data_dir), "--out", "k.token",
        cwd=tmp_path)
    server = server_at(data_dir).start()
    token = (tmp_path / "k.token").read_text().strip()

    def slow_body():
        yield b"\0" * 4096
        server.kill()  # the server dies with the upload half sent
        yield b"\0" * 4096

    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{server.url}/releases", content=slow_body(),
                   headers={"authorization": f"Bearer {token}"}, timeout=10)
    server.start()
    try:
        listing = httpx.get(f"{server.url}/releases",
                            headers={"authorization": f"Bearer {token}"})
        assert listing.json() == []
        assert list((data_dir / "incoming").iterdir()) == []
        assert list((data_dir / "releases").iterdir()) == []
    finally:
        server.stop()


def test_a_server_killed_mid_training_reports_the_job_failed(site, tmp_path):
    root = site["root"]
    if not (root / "plain-rel-2").exists():
        _protect(site, "plain", "plain-rel-2")
    data_dir = tmp_path / "srv"
    run("serve", "token", "add", "a", "--data-dir", str(data_dir), "--out",
        str(tmp_path / "k.token"), cwd=root)
    server = server_at(data_dir).start()
    headers = {"authorization": f"Bearer {(tmp_path / 'k.token').read_text().strip()}"}
    try:
        release = run("remote", "push", "--server", server.url, "--token-file",
                      str(tmp_path / "k.token"), "--data", "plain-rel-2", cwd=root).stdout.strip()
        job = httpx.post(f"{server.url}/jobs", headers=headers, json={
            "kind": "train", "releases": [release], "budget": "full"}).json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/jobs/{job}", headers=headers
                        ).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server.kill()  # the server and its worker, mid-training
        server.start()
        status = httpx.get(f"{server.url}/jobs/{job}", headers=headers).json()
        assert status["status"] == "failed" and "interrupted" in status["error"]
        listing = httpx.get(f"{server.url}/releases", headers=headers).json()
        assert [r["id"] for r in listing] == [release]
        from medveil.store import open_store

        stored = open_store(data_dir / "releases" / release)  # every hash intact
        assert stored.content_id == listing[0]["content_id"]
        assert list((data_dir / "models").iterdir()) == []
    finally:
        server.stop()


SLOW_CASES = {  # the workflow tests' small parameters, on their data
    "ckks": (["epochs=2", "encrypted_model=true"], ["--data", "cxr.npz"]),
    "privacy_sf": (["steps=8", "map_steps=8", "crop=32", "width=16", "map_width=16",
                    "map_blocks=1", "client_copies=flips", "test_copies=flips"],
                   ["--data", "chase-demo", "--size", "64"]),
    "primis": (["epochs=1", "min_steps=0"], ["--data", "cxr.npz"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", list(SLOW_CASES))
def test_every_protocol_through_the_service_equals_the_local_workflow(site, scheme):
    """ckks: the processor evaluates the release's encrypted model; privacy_sf: it trains
    the mapping network and returns encoded masks; primis: it has nothing to train (the
    job fails with the protocol's reason) and the key holder works locally."""
    from medveil.keys import Key
    from medveil.workflow import decode_results, predict, train

    root = site["root"]
    params, data = SLOW_CASES[scheme]
    args = ["protect", "--scheme", scheme, "--key", "owner.key", *data, "--out",
            f"{scheme}-rel", "--state", f"{scheme}-state", "--budget", "smoke"]
    for param in params:
        args += ["--param", param]
    run(*args, cwd=root)
    release = remote(site, "a", "push", "--data", f"{scheme}-rel").stdout.strip()
    key = Key.load(root / "owner.key")
    if scheme == "primis":
        refused = remote(site, "a", "train", "--release", release, "--budget", "smoke",
                         ok=False)
        assert refused.returncode == 2 and "recover" in refused.stderr
        return
    model_args: list[str] = []
    local_model = None
    if scheme != "ckks":
        model = remote(site, "a", "train", "--release", release, "--budget",
                       "smoke").stdout.strip()
        model_args = ["--model", model]
        train([str(root / f"{scheme}-rel")], out=root / f"{scheme}-local.pt", budget="smoke")
        local_model = root / f"{scheme}-local.pt"
    remote(site, "a", "predict", "--release", release, *model_args, "--out", f"{scheme}-wire")
    predict(local_model, str(root / f"{scheme}-rel"), split="test",
            out=root / f"{scheme}-local-res")
    source = root / data[1] if (root / data[1]).exists() else data[1]
    truth = load_dataset(source, **({"size": 64} if "--size" in data else {}))
    figures = {}
    for mode in ("wire", "local-res"):
        out = root / f"{scheme}-{mode}-decoded"
        figures[mode] = decode_results(
            root / f"{scheme}-{mode}", key=key, state=root / f"{scheme}-state", out=out,
            truth=truth)["metrics"]
    for name, value in figures["local-res"].items():
        assert figures["wire"][name] == pytest.approx(value, abs=1e-6), name


def test_concurrent_clients_get_no_errors(site, pushed):
    """Sixteen clients at once (the load benchmark's shape, shorter): every answer 200."""
    import threading

    token = (site["root"] / "a.token").read_text().strip()
    codes: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=site["url"], timeout=60,
                          headers={"authorization": f"Bearer {token}"}) as session:
            for _ in range(10):
                codes.append(session.get("/releases").status_code)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 160


# -- hardening, second round: hostile tars, folders medveil did not make, job bounds


def _jobs_in(data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "medveil.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


def test_sparse_and_expanding_uploads_are_refused_and_leave_nothing(site, tmp_path):
    """A ~2 KB tar whose sparse member declares 391 MiB, a header declaring 8 GiB, PAX size
    and sparse headers: refused by a server started with --max-upload-mb 1, nothing kept.
    The folder is an empty one the user made (adopted), and a restart reuses it."""
    from tests.hostile_tar import MiB, declared, end, gnu_sparse, pax_sparse, regular

    data_dir = tmp_path / "empty"
    data_dir.mkdir(mode=0o755)
    run("serve", "token", "add", "a", "--data-dir", str(data_dir), "--out", "k.token",
        cwd=tmp_path)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert (data_dir / ".medveil-service").is_file()
    manifest = regular("manifest.json", b"{}")
    cases = {
        "gnu-sparse": (manifest + gnu_sparse("train.view.npy", stored=b"x" * 100,
                                             real_size=391 * MiB) + end(), 422, "sparse"),
        "pax-sparse": (manifest + pax_sparse("train.view.npy", stored=b"x" * 100,
                                             real_size=195 * MiB) + end(), 422, "sparse"),
        "pax-size": (manifest + regular("train.view.npy", b"x", pax={"size": str(2**30)})
                     + end(), 422, "size"),
        "declared-8GiB": (manifest + declared("train.view.npy", data=b"x" * 100, size=2**33)
                          + end(), 413, "MiB"),
    }
    server = server_at(data_dir, max_upload_mb=1).start()
    headers = {"authorization": f"Bearer {(tmp_path / 'k.token').read_text().strip()}",
               "content-type": "application/x-tar"}
    try:
        for name, (blob, status, word) in cases.items():
            assert len(blob) < 8192, name
            answer = httpx.post(f"{server.url}/releases", content=blob, headers=headers)
            assert answer.status_code == status, (name, answer.text)
            assert word in answer.json()["error"], (name, answer.text)
            assert list((data_dir / "incoming").iterdir()) == [], name
            assert list((data_dir / "releases").iterdir()) == [], name
        assert httpx.get(f"{server.url}/releases", headers=headers).json() == []
    finally:
        server.stop()
    # a restart reuses the folder medveil made; it removes only what it names
    (data_dir / "incoming" / "release-0123456789abcdef.tar").write_bytes(b"partial")
    (data_dir / "releases" / "release-0123456789abcdef").mkdir()
    (data_dir / "releases" / "notes.txt").write_text("mine")
    server.start()
    try:
        assert httpx.get(f"{server.url}/releases", headers=headers).json() == []
    finally:
        server.stop()
    assert list((data_dir / "incoming").iterdir()) == []
    assert [p.name for p in (data_dir / "releases").iterdir()] == ["notes.txt"]


def test_a_folder_medveil_did_not_make_is_refused_untouched(tmp_path):
    user = tmp_path / "documents"
    (user / "releases").mkdir(parents=True)
    (user / "incoming").mkdir()
    (user / "releases" / "thesis.pdf").write_bytes(b"%PDF")
    (user / "incoming" / "photo.jpg").write_bytes(b"\xff\xd8")
    (user / "notes.txt").write_text("keep")
    user.chmod(0o751)
    before = {p: (p.read_bytes() if p.is_file() else None, stat.S_IMODE(p.stat().st_mode))
              for p in [user, *user.rglob("*")]}
    for args in (["serve", "--data-dir", str(user), "--port", "1"],
                 ["serve", "token", "add", "a", "--data-dir", str(user)]):
        refused = run(*args, cwd=tmp_path, ok=False)
        assert refused.returncode == 2, refused.stderr
        assert "not a medveil service folder" in refused.stderr
        assert "new or empty folder" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    after = {p: (p.read_bytes() if p.is_file() else None, stat.S_IMODE(p.stat().st_mode))
             for p in [user, *user.rglob("*")]}
    assert after == before
    file_instead = tmp_path / "file"
    file_instead.write_text("x")
    refused = run("serve", "token", "add", "a", "--data-dir", str(file_instead), cwd=tmp_path,
                  ok=False)
    assert refused.returncode == 2 and file_instead.read_text() == "x"


@pytest.fixture(scope="module")
def a_headers(site) -> dict[str, str]:
    token = (site["root"] / "a.token").read_text().strip()
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


def test_generated_bad_job_specs_get_400_and_nothing_is_stored(site, pushed, a_headers):
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    from medveil.limits import MAX_JOB_BODY_BYTES
    from tests.job_specs import bad_specs

    data_dir = site["server"].data_dir
    stored = _jobs_in(data_dir)
    release = st.just(pushed)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=bad_specs(release))
    @example(case=({"kind": "train", "releases": [pushed], "epochs": 1_000_000_000}, "epochs"))
    @example(case=({"kind": "train", "releases": [pushed], "epochs": "abc"}, "epochs"))
    @example(case=({"kind": "train", "releases": [pushed], "steps": [1]}, "steps"))
    @example(case=({"kind": "train", "releases": [pushed], "seed": -1}, "seed"))
    @example(case=({"kind": "train", "releases": [pushed, pushed]}, "releases"))
    @example(case=({"kind": "predict", "release": pushed, "split": "x" * 40 * 2**20}, "split"))
    def post(case):
        spec, field = case
        body = json.dumps(spec).encode()
        answer = httpx.post(f"{site['url']}/jobs", content=body, headers=a_headers, timeout=60)
        expected = 413 if len(body) > MAX_JOB_BODY_BYTES else 400
        assert answer.status_code == expected, (spec if len(body) < 2000 else field,
                                                answer.text)
        assert answer.json()["error"]
        if expected == 400 and field:
            assert field[:20] in answer.json()["error"], answer.text

    post()
    # the body's size counts before it is parsed: declared, and read without a length
    with socket.create_connection(("127.0.0.1", site["server"].port), timeout=10) as sock:
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                     + a_headers["authorization"].encode()
                     + b"\r\nContent-Length: 1099511627776\r\n\r\n{\"kind\":")
        assert b" 413 " in sock.recv(4096).split(b"\r\n")[0]
    chunked = httpx.post(f"{site['url']}/jobs", headers=a_headers,
                         content=(b" " * 65536 for _ in range(4)))
    assert chunked.status_code == 413
    deep = httpx.post(f"{site['url']}/jobs", headers=a_headers, content=b"[" * 60000)
    assert deep.status_code == 400
    assert _jobs_in(data_dir) == stored


def test_a_centre_cancels_its_jobs_and_a_job_past_the_wall_time_is_stopped(site, tmp_path):
    root = site["root"]
    if not (root / "plain-rel-2").exists():
        _protect(site, "plain", "plain-rel-2")
    data_dir = tmp_path / "srv"
    for centre in ("a", "b"):
        run("serve", "token", "add", centre, "--data-dir", str(data_dir), "--out",
            str(tmp_path / f"{centre}.token"), cwd=root)
    server = LocalServer(data_dir, env=ENV, max_job_s=8).start()
    auth = {c: {"authorization": f"Bearer {(tmp_path / f'{c}.token').read_text().strip()}"}
            for c in ("a", "b")}

    def submit(**spec) -> str:
        answer = httpx.post(f"{server.url}/jobs", headers=auth["a"], json=spec)
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    def status_of(job: str, *, until: tuple[str, ...] = (), within_s: float = 60) -> dict:
        deadline = time.monotonic() + within_s
        while True:
            answer = httpx.get(f"{server.url}/jobs/{job}", headers=auth["a"]).json()
            if not until or answer["status"] in until:
                return answer
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)

    try:
        release = run("remote", "push", "--server", server.url, "--token-file",
                      str(tmp_path / "a.token"), "--data", "plain-rel-2",
                      cwd=root).stdout.strip()
        long = {"kind": "train", "releases": [release], "epochs": 1000}
        running, queued = submit(**long), submit(**long)
        status_of(running, until=("running",))
        assert httpx.delete(f"{server.url}/jobs/{queued}", headers=auth["b"]).status_code == 404
        removed = httpx.delete(f"{server.url}/jobs/{queued}", headers=auth["a"])
        assert removed.json() == {"id": queued, "status": "removed"}
        assert httpx.get(f"{server.url}/jobs/{queued}", headers=auth["a"]).status_code == 404
        cancelled = run("remote", "cancel", "--server", server.url, "--token-file",
                        str(tmp_path / "a.token"), running, cwd=root)
        assert json.loads(cancelled.stdout) == {"id": running, "status": "cancelled"}
        # the worker is free at once: a short job runs and lists its model
        quick = submit(kind="train", releases=[release], budget="smoke", epochs=1)
        done = status_of(quick, until=("done", "failed"), within_s=60)
        assert done["status"] == "done", done
        assert status_of(running)["status"] == "cancelled"
        assert [p.name for p in (data_dir / "models").iterdir()] == [f"{done['output']}.pt"]
        again = httpx.delete(f"{server.url}/jobs/{quick}", headers=auth["a"])
        assert again.status_code == 409 and "already ended" in again.json()["error"]
        # past the wall-time limit (8 s here): stopped, failed with the reason, nothing kept
        over = submit(**long)
        failed = status_of(over, until=("done", "failed"), within_s=60)
        assert failed["status"] == "failed" and "limit of 8 s" in failed["error"], failed
        assert [p.name for p in (data_dir / "models").iterdir()] == [f"{done['output']}.pt"]
    finally:
        server.stop()


# -- hardening, second round: run time (a supervised worker, a busy port, fair turns)


def _wait_for(get, until, *, within_s: float = 60, every_s: float = 0.1):
    """``get()`` until ``until(answer)``, at most ``within_s`` seconds; every answer seen."""
    seen = []
    deadline = time.monotonic() + within_s
    while True:
        seen.append(get())
        if until(seen[-1]):
            return seen
        assert time.monotonic() < deadline, seen[-3:]
        time.sleep(every_s)


def test_a_killed_worker_fails_its_job_and_is_replaced(site, tmp_path):
    """SIGKILL the worker mid-job: the job fails with the reason, /health says degraded
    (503) until a new worker is ready, then ok, and the next job runs to the end."""
    import signal

    root = site["root"]
    if not (root / "plain-rel-2").exists():
        _protect(site, "plain", "plain-rel-2")
    data_dir = tmp_path / "srv"
    run("serve", "token", "add", "a", "--data-dir", str(data_dir), "--out",
        str(tmp_path / "a.token"), cwd=root)
    server = server_at(data_dir).start()
    headers = {"authorization": f"Bearer {(tmp_path / 'a.token').read_text().strip()}"}

    def job_status(job: str) -> dict:
        return httpx.get(f"{server.url}/jobs/{job}", headers=headers).json()

    def health() -> httpx.Response:
        return httpx.get(f"{server.url}/health")

    try:
        release = run("remote", "push", "--server", server.url, "--token-file",
                      str(tmp_path / "a.token"), "--data", "plain-rel-2",
                      cwd=root).stdout.strip()
        before = health()
        assert before.status_code == 200 and before.json()["status"] == "ok", before.text
        [worker] = before.json()["workers"]
        assert worker["state"] == "ready" and worker["restarts"] == 0
        job = httpx.post(f"{server.url}/jobs", headers=headers, json={
            "kind": "train", "releases": [release], "epochs": 1000}).json()["id"]
        _wait_for(lambda: job_status(job), lambda s: s["status"] == "running")
        os.kill(worker["pid"], signal.SIGKILL)
        answers = _wait_for(health, lambda r: r.status_code == 200, every_s=0.05)
        degraded = [r for r in answers if r.status_code == 503]
        assert degraded, "health never said degraded"
        assert all(r.json()["status"] == "degraded" for r in degraded)
        assert f"worker {worker['pid']} died (signal 9)" in degraded[0].json()["error"]
        after = answers[-1].json()
        assert after["status"] == "ok" and after["workers"][0]["pid"] != worker["pid"]
        assert after["workers"][0]["restarts"] == 1
        failed = job_status(job)
        assert failed["status"] == "failed", failed
        assert failed["error"] == "the worker died (signal 9); submit the job again"
        assert list((data_dir / "models").iterdir()) == []
        # the new worker runs the next job to the end
        quick = httpx.post(f"{server.url}/jobs", headers=headers, json={
            "kind": "train", "releases": [release], "budget": "smoke", "epochs": 1}
                           ).json()["id"]
        done = _wait_for(lambda: job_status(quick), lambda s: s["status"] in ("done", "failed"),
                         every_s=0.2)[-1]
        assert done["status"] == "done", done
        assert [p.name for p in (data_dir / "models").iterdir()] == [f"{done['output']}.pt"]
    finally:
        server.stop()


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = run("serve", "--data-dir", str(tmp_path / "srv"), "--port", str(port),
                      cwd=tmp_path, ok=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"medveil: error: port {port} on 127.0.0.1 is in use (another server?); pick another "
        "--port"]
    assert "Errno" not in refused.stdout + refused.stderr


def test_centres_take_turns_at_the_worker(site, pushed):
    """Centre a queues several jobs behind its running one, then b one: b's runs next
    (and its status says nothing is ahead of it), not after all of a's."""
    a_headers = {"authorization": f"Bearer {(site['root'] / 'a.token').read_text().strip()}"}
    b_headers = {"authorization": f"Bearer {(site['root'] / 'b.token').read_text().strip()}"}
    b_release = remote(site, "b", "push", "--data", "plain-rel-2").stdout.strip()
    url = site["url"]

    def submit(headers, release: str, **extra) -> str:
        answer = httpx.post(f"{url}/jobs", headers=headers, json={
            "kind": "train", "releases": [release], "budget": "smoke", "epochs": 1, **extra})
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    def status(headers, job: str) -> dict:
        return httpx.get(f"{url}/jobs/{job}", headers=headers).json()

    first = submit(a_headers, pushed, epochs=1000)  # holds the worker until cancelled
    _wait_for(lambda: status(a_headers, first), lambda s: s["status"] == "running")
    a_jobs = [submit(a_headers, pushed) for _ in range(3)]
    b_job = submit(b_headers, b_release)
    assert status(b_headers, b_job)["queued_ahead"] == 0
    assert [status(a_headers, j)["queued_ahead"] for j in a_jobs] == [1, 2, 3]
    assert httpx.delete(f"{url}/jobs/{first}", headers=a_headers).json()["status"] == \
        "cancelled"
    ended = {}
    for headers, job in [(b_headers, b_job)] + [(a_headers, j) for j in a_jobs]:
        ended[job] = _wait_for(lambda h=headers, j=job: status(h, j),
                               lambda s: s["status"] in ("done", "failed"), within_s=120,
                               every_s=0.3)[-1]
        assert ended[job]["status"] == "done", ended[job]
    by_start = sorted(ended, key=lambda j: ended[j]["started"])
    assert by_start == [b_job, *a_jobs]
    assert status(a_headers, first)["started"] < ended[b_job]["started"]
