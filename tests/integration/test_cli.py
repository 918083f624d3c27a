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
    assert verified.returncode == 0 and "HMAC checked" in verified.stdout
    evaluated = run("evaluate", "--model", str(workspace / "m.pt"), "--data", store,
                    "--json", str(tmp_path / "metrics.json"))
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


def test_user_errors_are_one_line(tmp_path, workspace):
    key = str(workspace / "owner.key")
    assert_user_error(run("data", "show", str(tmp_path / "missing")), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(run("data", "show", str(empty)), "empty")
    assert_user_error(run("protect", "--scheme", "intensity_lt", "--key", key, "--data",
                          "cxr-demo", "--out", str(tmp_path / "s")),
                      "unknown scheme", "Did you mean 'intensity_lut'")
    (tmp_path / "fake.nii").write_bytes(b"x" * 400)
    assert_user_error(run("data", "show", str(tmp_path / "fake.nii")), "NIfTI")
    assert_user_error(run("protect", "--scheme", "plain", "--key", key, "--data", "cxr-demo",
                          "--out", str(workspace / "store")), "already exists")
    assert_user_error(run("evaluate", "--model", str(tmp_path / "none.pt"), "--data",
                          "cxr-demo"), "does not exist")


def test_role_commands_refuse_what_they_cannot_do(tmp_path, workspace):
    """The processor's commands need no key; the owner's refuse a wrong key or no state."""
    key = str(workspace / "owner.key")
    other = str(tmp_path / "other.key")
    assert run("keygen", other).returncode == 0
    assert run("predict", "--model", str(workspace / "m.pt"), "--data", str(workspace / "store"),
               "--out", str(tmp_path / "res")).returncode == 0
    assert_user_error(run("decode", "--key", other, "--results", str(tmp_path / "res"),
                          "--out", str(tmp_path / "p.csv")), "key")
    assert not (tmp_path / "p.csv").exists()
    assert_user_error(run("protect", "--scheme", "obfuscation", "--key", key, "--data",
                          "cxr-demo", "--out", str(tmp_path / "r")), "--state")
    assert_user_error(run("protect", "--scheme", "plain", "--key", key, "--data", "cxr-demo",
                          "--out", str(tmp_path / "r"), "--state", str(tmp_path / "r" / "s")),
                      "separate")
    assert_user_error(run("recover", "--key", key, "--data", str(workspace / "store"), "--out",
                          str(tmp_path / "x.npz"), "--state", str(tmp_path / "nowhere")),
                      "owner-state")
    assert_user_error(run("train", "--data", str(workspace / "store"), "--out",
                          str(tmp_path / "m2.pt"), "--budget", "quik"), "Did you mean 'quick'")
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "m2.pt").exists()
