"""The owner's key file survives every output option of every command, ``--force`` or not.

The commands and their output options are read from the command line itself (typer's
click tree), so a new command or a new output option is covered the day it appears:
a combination this test cannot build arguments for fails the test.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from medveil.cli import app
from tests.conftest import invoke

#: Options that name a path the command writes.
OUTPUT_OPTIONS = ("--out", "--state", "--json", "--grid")
#: Commands whose outputs are not a file or folder a key could be at.
NO_FILE_OUTPUT = {"keygen", "bench"}  # keygen --force is the one way; bench refuses files
#: Where ``--state`` is the owner state the command reads (an input, not an output).
STATE_IS_INPUT = {"decode", "recover"}


def output_combinations() -> list[tuple[str, str, bool]]:
    """Every (command, output option, with --force) of the command line, from its own click
    tree: with and without ``--force`` where the command has it."""
    root = get_command(app)
    found = []

    def walk(group, prefix):
        for name, command in group.commands.items():
            path = f"{prefix} {name}".strip()
            if hasattr(command, "commands"):
                walk(command, path)
                continue
            has_force = any(p.opts[0] == "--force" for p in command.params)
            for param in command.params:
                if param.param_type_name == "option" and param.opts[0] in OUTPUT_OPTIONS \
                        and path not in NO_FILE_OUTPUT and not (
                            param.opts[0] == "--state" and path in STATE_IS_INPUT):
                    found.extend((path, param.opts[0], force)
                                 for force in ((False, True) if has_force else (False,)))

    walk(root, "")
    assert len(found) >= 8, found  # the walk sees the command line
    return found


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A key, a plain release with its owner state, a model and results: real inputs
    for every command, so each one reaches its output check."""
    root = tmp_path_factory.mktemp("force")

    def ok(*args):
        code, said = invoke(*args)
        assert code == 0, said

    ok("keygen", str(root / "owner.key"))
    ok("protect", "--scheme", "plain", "--key", str(root / "owner.key"), "--data", "cxr-demo",
       "--out", str(root / "rel"), "--state", str(root / "state"), "--budget", "smoke")
    ok("train", "--data", str(root / "rel"), "--out", str(root / "m.pt"), "--budget", "smoke",
       "--quiet")
    ok("predict", "--model", str(root / "m.pt"), "--data", str(root / "rel"), "--out",
       str(root / "res"))
    return root


def base_args(command: str, root: Path) -> list[str]:
    key, rel, state = str(root / "owner.key"), str(root / "rel"), str(root / "state")
    table = {
        "protect": ["protect", "--scheme", "plain", "--key", key, "--data", "cxr-demo",
                    "--budget", "smoke", "--out", str(root / "new-rel")],
        "train": ["train", "--data", rel, "--budget", "smoke", "--quiet"],
        "predict": ["predict", "--model", str(root / "m.pt"), "--data", rel],
        "decode": ["decode", "--results", str(root / "res"), "--key", key, "--state", state,
                   "--out", str(root / "new.csv")],
        "recover": ["recover", "--key", key, "--data", rel, "--state", state],
        "multicentre": ["multicentre", "--data", "chase-demo", "--budget", "smoke",
                        "--centres", "2"],
        "evaluate": ["evaluate", "--model", str(root / "m.pt"), "--data", rel, "--key", key],
        "federated-app": ["federated-app", "--centres", "2"],
        "data show": ["data", "show", "cxr-demo"],
        "serve token add": ["serve", "token", "add", "centre-a", "--data-dir",
                            str(root / "service")],
        "remote predict": ["remote", "predict", "--server", "http://127.0.0.1:9",
                           "--token-file", key, "--release", "r"],
    }
    if command not in table:
        pytest.fail(f"no arguments for `medveil {command}`: add it to this test")
    return table[command]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("command", "option", "force"), output_combinations(),
                         ids=lambda v: v.replace(" ", "-") if isinstance(v, str) else
                         ("force" if v else "no-force"))
def test_no_output_option_replaces_the_key(room, command, option, force):
    key = room / "owner.key"
    before = _digest(key)
    args = [a for a in base_args(command, room)]
    if option in args:  # the option's value becomes the key file
        args[args.index(option) + 1] = str(key)
    else:
        args += [option, str(key)]
    code, said = invoke(*args, *(["--force"] if force else []))
    assert code == 2, (args, said)
    assert "keygen --force" in said, said  # refused as a key, not for another reason
    assert _digest(key) == before and oct(key.stat().st_mode)[-3:] == "600"


def test_a_folder_holding_the_key_is_not_replaced_either(room):
    holder = room / "holder"
    holder.mkdir()
    (holder / "manifest.json").write_text('{"format": "medveil.store/1"}')
    (holder / "owner.key").write_bytes((room / "owner.key").read_bytes())
    before = _digest(holder / "owner.key")
    code, said = invoke(*base_args("protect", room)[:-2], "--out", str(holder), "--force")
    assert code == 2 and "keygen --force" in said
    assert _digest(holder / "owner.key") == before


def test_keygen_force_still_replaces_a_key(room, tmp_path):
    target = tmp_path / "k.key"
    target.write_bytes((room / "owner.key").read_bytes())
    before = _digest(target)
    done = subprocess.run([sys.executable, "-m", "medveil.cli", "keygen", str(target), "--force"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _digest(target) != before


def test_the_refusal_is_one_line_and_exit_2_as_a_user_sees_it(room):
    key = room / "owner.key"
    done = subprocess.run([sys.executable, "-m", "medveil.cli", "recover", "--key", str(key),
                           "--data", str(room / "rel"), "--out", str(key), "--force"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "keygen --force" in done.stderr
