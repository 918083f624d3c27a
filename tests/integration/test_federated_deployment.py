"""The federated protocol on Flower's deployment runtime, as a hospital runs it: a
SuperLink (the aggregator), one SuperNode per centre with its own data and state
folder, the App folder ``medveil federated-app`` writes, ``flwr run``; every piece a
separate process on 127.0.0.1, two centres, two rounds of DP-SGD."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("opacus")

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _centre_sets(cxr, folder: Path) -> list[Path]:
    """Two centres' own data sets (MedMNIST-style .npz), real chest X-rays at 32 px."""
    paths = []
    for centre in range(2):
        arrays = {}
        for split, count in (("train", 24), ("val", 4), ("test", 8)):
            part = cxr.split(split if split != "val" else "test")
            rows = np.arange(centre, len(part), 2)[:count]
            images = part.images[rows, 0, ::2, ::2]
            arrays[f"{split}_images"] = (images * 255).round().astype(np.uint8)
            arrays[f"{split}_labels"] = part.labels[rows].astype(np.uint8)
        path = folder / f"centre{centre}.npz"
        np.savez(path, **arrays)
        paths.append(path)
    return paths


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the SuperLink exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the SuperLink did not listen on {port}: {log.read_text()[-2000:]}")


@pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None,
                    reason="Flower's command-line tools are not installed beside python")
def test_a_superlink_and_two_supernodes_train_two_rounds(cxr, tmp_path):
    home = tmp_path / "flwr-home"
    home.mkdir()
    link_port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink.medveil-local]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    data = _centre_sets(cxr, tmp_path)
    processes: list[subprocess.Popen] = []

    def start(args: list[str], log: Path) -> subprocess.Popen:
        handle = log.open("w")
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   cwd=tmp_path, start_new_session=True)
        processes.append(process)
        return process

    try:
        link = start([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
                      "--port", str(link_port), "--disable-runtime-dependency-installation",
                      "--database", str(tmp_path / "link.db")], tmp_path / "link.log")
        _wait_for_port(link_port, link, tmp_path / "link.log")
        for centre, path in enumerate(data):
            node_config = (f'data="{path}" centre={centre} '
                           f'state="{tmp_path / f"state{centre}"}"')
            start([str(BIN / "flower-supernode"), "--insecure", "--superlink",
                   f"127.0.0.1:{link_port}", "--host", "127.0.0.1",
                   "--port", str(_free_port()), "--node-config", node_config],
                  tmp_path / f"node{centre}.log")
        app = tmp_path / "app"
        model = tmp_path / "aggregator"
        made = subprocess.run(
            [str(BIN / "medveil"), "federated-app", "--out", str(app), "--centres", "2",
             "--param", "rounds=2", "--param", "batch_size=8", "--param", "width=8",
             "--param", "noise=1.0", "--model-out", str(model)],
            env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        run = subprocess.run([str(BIN / "flwr"), "run", str(app), "medveil-local",
                              "--stream"], env=env, capture_output=True, text=True,
                             timeout=150, cwd=tmp_path)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        deadline = time.monotonic() + 30
        while not (model / "model.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (model / "model.npz").exists(), (tmp_path / "link.log").read_text()[-3000:]
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    from medveil.protocols import get_protocol
    from medveil.schemes import create
    from tests.unit.test_bench_rows import TINY

    aggregator = get_protocol("federated").processor_half(
        budget=TINY, seed=0, params=create("federated").params)
    aggregator.load_checkpoint(model / "model.npz")
    assert aggregator.round == 2 and aggregator.rounds_run == 2
    for centre in range(2):
        state = tmp_path / f"state{centre}"
        assert state.stat().st_mode & 0o777 == 0o700
        ledger = json.loads((state / "ledger.json").read_text())
        assert (state / "ledger.json").stat().st_mode & 0o777 == 0o600
        assert len(ledger["history"]) >= 1 and ledger["history"][0][0] == 1.0
        with np.load(state / "predictions.npz") as predictions:
            assert predictions["probabilities"].shape == (8, 2)
        # what the centre reported to the aggregator is what its own ledger says
        from medveil.federated.ledger import PrivacyLedger

        spent = PrivacyLedger.load(state / "ledger.json").epsilon(1e-5)
        assert aggregator.epsilons[-1][centre] == pytest.approx(spent)
