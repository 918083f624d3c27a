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
