"""The CLI as a user runs it: real processes, real files, exit codes and stderr."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

MEDVEIL = [sys.executable, "-m", "medveil.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*MEDVEIL, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and lines[0].startswith("medveil: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """An owner's key and a protected store, made once through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    assert run("keygen", str(root / "owner.key")).returncode == 0
    result = run("protect", "--scheme", "intensity_lut", "--key", str(root / "owner.key"),
                 "--data", "cxr-demo", "--out", str(root / "store"))
    assert result.returncode == 0, result.stderr
    # the processor trains with the release alone: no key
    trained = run("train", "--data", str(root / "store"), "--out", str(root / "m.pt"),
                  "--epochs", "1", "--quiet")
    assert trained.returncode == 0, trained.stderr
    return root


def test_keygen_writes_0600_and_refuses_to_overwrite(tmp_path):
    result = run("keygen", str(tmp_path / "k"))
    assert result.returncode == 0
    record = json.loads((tmp_path / "k").read_text())
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert record["fingerprint"] in result.stdout and record["key"] not in result.stdout
    assert_user_error(run("keygen", str(tmp_path / "k")), "--force")
    assert run("keygen", str(tmp_path / "k"), "--force").returncode == 0


def test_data_list_and_show_with_grid(tmp_path):
    listing = run("data", "list")
    assert listing.returncode == 0 and "cxr-demo" in listing.stdout
    assert "chase-demo" in listing.stdout and "CC BY 4.0" in listing.stdout
    shown = run("data", "show", "cxr-demo", "--grid", str(tmp_path / "grid.png"))
    assert shown.returncode == 0, shown.stderr
    assert "64x64" in shown.stdout and "test" in shown.stdout and "160" in shown.stdout
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_protect_verify_train_evaluate(workspace, tmp_path):
    key = str(workspace / "owner.key")
    store = str(workspace / "store")
    verified = run("verify", store, "--key", key)
    assert verified.returncode == 0 and "valid HMAC" in verified.stdout
    # the processor scores on val (the release carries no test truth)
    evaluated = run("evaluate", "--model", str(workspace / "m.pt"), "--data", store,
                    "--split", "val", "--json", str(tmp_path / "metrics.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["auc"] <= 1.0 and "accuracy" in metrics


def test_wrong_key_and_tampered_store(workspace, tmp_path):
    assert run("keygen", str(tmp_path / "other.key")).returncode == 0
    assert_user_error(run("verify", str(workspace / "store"), "--key", str(tmp_path / "other.key")),
                      "wrong key")
    copy = tmp_path / "store"
    shutil.copytree(workspace / "store", copy)
    shard = copy / "train.view.npy"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0x01
    shard.write_bytes(bytes(data))
    assert_user_error(run("verify", str(copy)), "tampered", "train.view.npy")
    assert_user_error(run("train", "--data", str(copy), "--out", str(tmp_path / "m.pt")),
                      "tampered")
    assert not (tmp_path / "m.pt").exists()


def test_help_names_the_install_extras():
    """Rich reads ``[cluster]`` as markup; the help must still show the extra to install."""
    assert "medveil[cluster]" in run("bench", "--help").stdout
    assert "medveil[service]" in run("--help").stdout


def test_a_sigterm_past_the_command_ends_it_without_a_traceback():
    """Once the command is done (interpreter exit, atexit handlers), SIGTERM is the default
    one again: the process ends, never with "Exception ignored in atexit"."""
    script = ("import signal, sys\nfrom medveil.cli import main\ntry:\n    main(['schemes'])\n"
              "except SystemExit:\n    pass\n"
              "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
              "import os\nos.kill(os.getpid(), signal.SIGTERM)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip().endswith("True"), done.stdout
    assert done.returncode == -15 and "Traceback" not in done.stderr, done.stderr
