"""Every command, fed what a careless user or a malicious processor would give it.

Each case runs the real entry point (``medveil.cli.main``, the console script's
function; a few also as separate processes) and must end with exit code 2, one
line on stderr naming the file or option, no traceback, and nothing half-written
at ``--out`` (the output is as it was: absent, or the same bytes; no temporary
sibling left). The world the cases attack is built once: a key, a small real
data set, a release, an owner state, a model and results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from medveil.cli import main
from medveil.data import load_dataset
from tests.forge import edit_manifest, reseal_shard, swap_views

MEDVEIL = [sys.executable, "-m", "medveil.cli"]


# ----------------------------------------------------------------------------- the world
def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _run_ok(*argv: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    assert stop.value.code in (0, None), argv


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A small real data set (chest X-ray crops) and everything the roles make of it."""
    root = tmp_path_factory.mktemp("bad-inputs")
    cxr = load_dataset("cxr-demo")
    images = {s: (cxr.split(s).images[:n, 0, 16:48, 16:48] * 255).astype(np.uint8)
              for s, n in (("train", 40), ("val", 10), ("test", 16))}
    labels = {s: cxr.split(s).labels[:len(images[s])].astype(np.uint8)
              for s in images}
    good = {f"{s}_images": v for s, v in images.items()} | \
        {f"{s}_labels": v for s, v in labels.items()}
    w = {"root": root, "data": _npz(root / "small.npz", **good)}
    w["images"], w["labels"] = images, labels
    _run_ok("keygen", str(root / "owner.key"))
    _run_ok("keygen", str(root / "other.key"))
    w["key"], w["other_key"] = root / "owner.key", root / "other.key"
    _run_ok("protect", "--scheme", "plain", "--key", str(w["key"]), "--data", str(w["data"]),
            "--out", str(root / "release"), "--state", str(root / "state"))
    w["release"], w["state"] = root / "release", root / "state"
    _run_ok("train", "--data", str(w["release"]), "--out", str(root / "model.pt"),
            "--budget", "smoke", "--quiet")
    w["model"] = root / "model.pt"
    _run_ok("predict", "--model", str(w["model"]), "--data", str(w["release"]),
            "--out", str(root / "results"))
    w["results"] = root / "results"
    # A second release (fewer images): results for the first are not results for it.
    fewer = _npz(root / "fewer.npz", **{k: v[:30] if k.startswith("train") else v
                                        for k, v in good.items()})
    _run_ok("protect", "--scheme", "plain", "--key", str(w["key"]), "--data", str(fewer),
            "--out", str(root / "release2"), "--state", str(root / "state2"))
    w["state2"] = root / "state2"
    return w


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One bad input: ``setup`` prepares files in ``tmp`` and returns the argv."""

    name: str
    setup: Callable[[dict[str, Path], Path], list[str]]
    fragments: tuple[str, ...] = ()
    out: str | None = None  #: the --out (relative to tmp) that must be left as it was
    tags: set[str] = field(default_factory=set)


CASES: list[Case] = []


def case(name: str, *fragments: str, out: str | None = None):
    def register(fn):
        CASES.append(Case(name, fn, fragments, out))
        return fn
    return register


def copy_release(w, tmp: Path, name: str = "rel") -> Path:
    target = tmp / name
    shutil.copytree(w["release"], target)
    return target


def bad_npz(tmp: Path, **changes) -> Path:
    """The small data set with some arrays replaced (None drops one)."""
    with np.load(WORLD["data"]) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name, None)
        else:
            arrays[name] = value
    return _npz(tmp / "bad.npz", **arrays)


def protect_args(w, data, out="rel-out", *extra: str, tmp: Path) -> list[str]:
    return ["protect", "--scheme", "plain", "--key", str(w["key"]), "--data", str(data),
            "--out", str(tmp / out), *extra]


WORLD: dict[str, Path] = {}

# -- keygen ------------------------------------------------------------------------------
case("keygen into a missing folder", "does not exist")(
    lambda w, t: ["keygen", str(t / "no" / "k.key")])


@case("keygen over an existing key", "already exists", out="k.key")
def _(w, t):
    shutil.copy(w["key"], t / "k.key")
    return ["keygen", str(t / "k.key")]


@case("keygen --force over a user's file", "not a medveil key file", out="notes.txt")
def _(w, t):
    (t / "notes.txt").write_text("my notes")
    return ["keygen", str(t / "notes.txt"), "--force"]


@case("keygen --force over a folder", "not a medveil key file", out="folder")
def _(w, t):
    (t / "folder").mkdir()
    (t / "folder" / "x").write_text("x")
    return ["keygen", str(t / "folder"), "--force"]


case("keygen with a name too long", "too long")(
    lambda w, t: ["keygen", str(t / ("k" * 240))])
case("keygen under a file", "does not exist")(
    lambda w, t: [(t / "f").write_text("x") and "keygen", str(t / "f" / "k.key")])
case("keygen with an unknown option", "--seed")(
    lambda w, t: ["keygen", str(t / "k.key"), "--seed", "1"])
case("keygen without a path", "PATH")(lambda w, t: ["keygen"])
case("an unknown command", "bogus")(lambda w, t: ["bogus"])


# -- keys given to any command -----------------------------------------------------------
case("protect without --key", "--key")(
    lambda w, t: ["protect", "--scheme", "plain", "--data", str(w["data"]), "--out",
                  str(t / "o")])
case("protect with a missing key file", "nokey.key", out="o")(
    lambda w, t: protect_args(w, w["data"], "o", tmp=t)[:4] + [str(t / "nokey.key")]
    + protect_args(w, w["data"], "o", tmp=t)[5:])


def _with_key(key: Path, w, t) -> list[str]:
    args = protect_args(w, w["data"], "o", tmp=t)
    args[4] = str(key)
    return args


case("protect with a folder as key", "is a folder", out="o")(
    lambda w, t: _with_key(t, w, t))


@case("protect with a world-readable key", "chmod 600", out="o")
def _(w, t):
    shutil.copy(w["key"], t / "k.key")
    os.chmod(t / "k.key", 0o644)
    return _with_key(t / "k.key", w, t)


@case("protect with a key that is not JSON", "not a medveil key file", out="o")
def _(w, t):
    (t / "k.key").write_bytes(os.urandom(64))
    os.chmod(t / "k.key", 0o600)
    return _with_key(t / "k.key", w, t)


@case("protect with a key whose fingerprint is wrong", "corrupt", out="o")
def _(w, t):
    record = json.loads(w["key"].read_text())
    record["fingerprint"] = "0" * 32
    (t / "k.key").write_text(json.dumps(record))
    os.chmod(t / "k.key", 0o600)
    return _with_key(t / "k.key", w, t)


@case("protect with a key of the wrong length", "32 bytes", out="o")
def _(w, t):
    import base64

    record = json.loads(w["key"].read_text())
    record["key"] = base64.b64encode(b"short").decode()
    (t / "k.key").write_text(json.dumps(record))
    os.chmod(t / "k.key", 0o600)
    return _with_key(t / "k.key", w, t)


@case("protect with a huge key file", "not a medveil key file", out="o")
def _(w, t):
    (t / "k.key").write_text(" " * 10000 + w["key"].read_text())
    os.chmod(t / "k.key", 0o600)
    return _with_key(t / "k.key", w, t)


# -- protect: options --------------------------------------------------------------------
case("protect with an unknown scheme", "Did you mean 'plain'", out="o")(
    lambda w, t: ["protect", "--scheme", "plian", *protect_args(w, w["data"], "o", tmp=t)[3:]])
for _value, _frag in (("levels=abc", "levels"), ("levels=3.7", "levels"),
                      ("levls=3", "Did you mean 'levels'"), ("levels", "NAME=VALUE"),
                      ("levels=1", "levels"), ("levels=true", "levels")):
    case(f"protect --param {_value}", _frag, out="o")(
        lambda w, t, v=_value: ["protect", "--scheme", "intensity_lut", "--param", v,
                                *protect_args(w, w["data"], "o", tmp=t)[3:]])
for _opt, _value in (("--size", "1000000000"), ("--size", "2"), ("--size", "abc"),
                     ("--seed", "-1"), ("--seed", str(2**70)), ("--seed", "1.5"),
                     ("--budget", "huge"), ("--color", "purple"), ("--color", "rgb"),
                     ("--label", "Smith Jane/DOB1970"), ("--label", ""),
                     ("--masks", "1st_manual")):
    case(f"protect {_opt} {_value}", _opt if _opt not in ("--budget",) else "budget",
         out="o")(lambda w, t, o=_opt, v=_value: protect_args(w, w["data"], "o", o, v, tmp=t))
case("protect --state for a scheme that needs it, missing", "--state", out="o")(
    lambda w, t: ["protect", "--scheme", "obfuscation",
                  *protect_args(w, w["data"], "o", tmp=t)[3:]])
case("protect --state inside --out", "separate", out="o")(
    lambda w, t: protect_args(w, w["data"], "o", "--state", str(t / "o" / "s"), tmp=t))


# -- protect: data -----------------------------------------------------------------------
case("protect a missing path", "does not exist", out="o")(
    lambda w, t: protect_args(w, t / "nothing.npz", "o", tmp=t))
case("protect a release", "is a medveil release", out="o")(
    lambda w, t: protect_args(w, w["release"], "o", tmp=t))
case("protect an owner state", "owner-state", out="o")(
    lambda w, t: protect_args(w, w["state"], "o", tmp=t))
case("protect a text file", "not a format medveil reads", out="o")(
    lambda w, t: [(t / "x.txt").write_text("x") and "protect",
                  *protect_args(w, t / "x.txt", "o", tmp=t)[1:]])
case("protect an empty folder", "empty", out="o")(
    lambda w, t: [(t / "empty").mkdir() or "protect",
                  *protect_args(w, t / "empty", "o", tmp=t)[1:]])
_LABEL_CASES = {
    "string labels": (np.array(["a"] * 40), "not integer class labels"),
    "float labels": (np.linspace(0, 1, 40), "non-integer"),
    "negative labels": (-np.ones(40, np.int64), "negative"),
    "huge labels": (np.full(40, 10**9, np.int64), "more than 1000 classes"),
    "too few labels": (np.zeros(39, np.int64), "39 labels for 40"),
    "multi-label": (np.zeros((40, 3), np.int64), "multi-label"),
    "NaN labels": (np.full(40, np.nan), "non-integer"),
}
for _name, (_labels, _frag) in _LABEL_CASES.items():
    case(f"protect an npz with {_name}", _frag, "train_labels", out="o")(
        lambda w, t, lab=_labels: protect_args(w, bad_npz(t, train_labels=lab), "o", tmp=t))
case("protect an npz with masks of the wrong number", "train_masks", out="o")(
    lambda w, t: protect_args(w, bad_npz(t, train_masks=np.zeros((3, 32, 32), np.uint8)), "o",
                              tmp=t))
case("protect an npz with masks of the wrong size", "train_masks", out="o")(
    lambda w, t: protect_args(w, bad_npz(t, train_masks=np.zeros((40, 16, 16), np.uint8)),
                              "o", tmp=t))
case("protect an npz whose splits differ in size", "--size", out="o")(
    lambda w, t: protect_args(w, bad_npz(t, test_images=np.zeros((16, 40, 40), np.uint8)),
                              "o", tmp=t))
case("protect an npz with NaN pixels", "NaN", "train_images", out="o")(
    lambda w, t: protect_args(w, bad_npz(t, train_images=np.full((40, 32, 32), np.nan,
                                                                 np.float32)), "o", tmp=t))
case("protect an npz of 5-D images", "train_images", out="o")(
    lambda w, t: protect_args(w, bad_npz(t, train_images=np.zeros((40, 1, 1, 32, 32))), "o",
                              tmp=t))
case("protect an npz of string pixels", "train_images", out="o")(
    lambda w, t: protect_args(w, bad_npz(t, train_images=np.array([["x"] * 32] * 40)), "o",
                              tmp=t))
case("protect an npz with no images", "MedMNIST", out="o")(
    lambda w, t: protect_args(w, bad_npz(t, train_images=None, val_images=None,
                                         test_images=None), "o", tmp=t))


@case("protect a truncated npz", "bad.npz", out="o")
def _(w, t):
    data = w["data"].read_bytes()
    (t / "bad.npz").write_bytes(data[:len(data) // 2])
    return protect_args(w, t / "bad.npz", "o", tmp=t)


@case("protect random bytes named .npz", "bad.npz", out="o")
def _(w, t):
    (t / "bad.npz").write_bytes(os.urandom(2000))
    return protect_args(w, t / "bad.npz", "o", tmp=t)


@case("protect an npz holding pickled objects", "pickled", out="o")
def _(w, t):
    arrays = dict(np.load(w["data"]))
    arrays["train_labels"] = np.array([{"a": 1}] * 40, dtype=object)
    np.savez(t / "bad.npz", **arrays)
    return protect_args(w, t / "bad.npz", "o", tmp=t)


# -- protect: outputs --------------------------------------------------------------------
@case("protect into an existing release without --force", "already exists", out="rel")
def _(w, t):
    copy_release(w, t)
    return protect_args(w, w["data"], "rel", tmp=t)


@case("protect --force into a user's folder", "not an output medveil wrote", out="mine")
def _(w, t):
    (t / "mine").mkdir()
    (t / "mine" / "thesis.docx").write_text("years of work")
    return protect_args(w, w["data"], "mine", "--force", tmp=t)


@case("protect --force over a user's file", "not an output medveil wrote", out="mine.txt")
def _(w, t):
    (t / "mine.txt").write_text("keep me")
    return protect_args(w, w["data"], "mine.txt", "--force", tmp=t)


@case("protect --force onto its own input", "input", out="in.npz")
def _(w, t):
    shutil.copy(w["data"], t / "in.npz")
    return protect_args(w, t / "in.npz", "in.npz", "--force", tmp=t)


@case("protect --force into the folder holding its input", "input", out="d")
def _(w, t):
    (t / "d").mkdir()
    shutil.copy(w["data"], t / "d" / "in.npz")
    return protect_args(w, t / "d" / "in.npz", "d", "--force", tmp=t)


@case("protect --state over a user's folder", "not an output medveil wrote", out="s")
def _(w, t):
    (t / "s").mkdir()
    (t / "s" / "x").write_text("x")
    return protect_args(w, w["data"], "o", "--state", str(t / "s"), "--force", tmp=t)


case("protect --out in a missing folder", "does not exist")(
    lambda w, t: protect_args(w, w["data"], "no/where", tmp=t))
case("protect --out under a file", "does not exist")(
    lambda w, t: [(t / "f").write_text("x") and "protect",
                  *protect_args(w, w["data"], "f/o", tmp=t)[1:]])
case("protect --out with a name too long", "too long")(
    lambda w, t: protect_args(w, w["data"], "o" * 240, tmp=t))


@case("protect --out a symlink loop", "symbolic link")
def _(w, t):
    os.symlink(t / "loop", t / "loop")
    return protect_args(w, w["data"], "loop", "--force", tmp=t)


@case("protect --out a symlink to a folder", "symbolic link")
def _(w, t):
    (t / "real").mkdir()
    os.symlink(t / "real", t / "link")
    return protect_args(w, w["data"], "link", tmp=t)


# -- verify ------------------------------------------------------------------------------
case("verify a missing folder", "does not exist")(
    lambda w, t: ["verify", str(t / "none")])
case("verify a file", "is a file")(lambda w, t: ["verify", str(w["data"])])
case("verify a folder without manifest", "manifest.json")(
    lambda w, t: [(t / "e").mkdir() or "verify", str(t / "e")])


def _verify_after(edit_fn, *, key: bool = False):
    def setup(w, t):
        rel = copy_release(w, t)
        edit_fn(w, rel)
        return ["verify", str(rel)] + (["--key", str(w["key"])] if key else [])
    return setup


def _flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def _write(rel: Path, name: str, data: bytes | str) -> None:
    (rel / name).write_bytes(data.encode() if isinstance(data, str) else data)


_VERIFY = {
    "a manifest that is not JSON": (lambda w, r: _write(r, "manifest.json", "{oops"),
                                    "not JSON"),
    "a manifest that is a list": (lambda w, r: _write(r, "manifest.json", "[1, 2]"),
                                  "manifest"),
    "a manifest of another format": (
        lambda w, r: edit_manifest(r, lambda m: m.update(format="medveil.store/9")),
        "medveil.store/1"),
    "a shard without sha256": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"][0].pop("sha256")), "sha256"),
    "a shard with a string size": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"][0].update(bytes="12")), "bytes"),
    "shards that are not a list": (
        lambda w, r: edit_manifest(r, lambda m: m.update(shards={"a": 1})), "shards"),
    "a duplicated shard": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"].append(m["shards"][0])), "twice"),
    "a split without count": (
        lambda w, r: edit_manifest(r, lambda m: m["splits"]["train"].pop("count")), "count"),
    "a wrong split count": (
        lambda w, r: edit_manifest(r, lambda m: m["splits"]["train"].update(count=41)),
        "41"),
    "a shard path outside the store": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"][0].update(
            file="../../etc/passwd")), "points at"),
    "an absolute shard path": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"][0].update(file="/etc/passwd")),
        "points at"),
    "a hostile shard kind": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"][0].update(kind="../x")),
        "kind"),
    "an unlisted file": (lambda w, r: _write(r, "extra.npy", b"x"), "extra.npy"),
    "a flipped shard byte": (lambda w, r: _flip(r / "train.view.npy", -1), "SHA-256"),
    "a truncated shard": (
        lambda w, r: _write(r, "train.view.npy", (r / "train.view.npy").read_bytes()[:100]),
        "bytes"),
    "a missing shard": (lambda w, r: (r / "train.view.npy").unlink(), "train.view.npy"),
    "a shard that is a symlink": (
        lambda w, r: ((r / "train.view.npy").unlink(),
                      os.symlink(w["release"] / "train.view.npy", r / "train.view.npy")),
        "plain file"),
}
for _name, (_edit, _frag) in _VERIFY.items():
    case(f"verify a release with {_name}", _frag)(_verify_after(_edit))

# The seven forgeries: a forger who knows the format but not the key.
_FORGERIES = {
    "a null key fingerprint": (
        lambda w, r: edit_manifest(r, lambda m: (m.update(key_fingerprint=None),
                                                 m.pop("manifest_hmac"))), "not authentic"),
    "a missing HMAC": (lambda w, r: edit_manifest(r, lambda m: m.pop("manifest_hmac")),
                       "HMAC is missing"),
    "swapped shards": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"].sort(
            key=lambda s: s["file"], reverse=True) or swap_views(r, m)), "HMAC"),
    "edited labels with a new hash": (
        lambda w, r: reseal_shard(r, "train.labels.npy", np.zeros(40, np.uint8)), "HMAC"),
    "changed scheme parameters": (
        lambda w, r: edit_manifest(r, lambda m: m["scheme"]["params"].update(evil=1)), "HMAC"),
    "a shard path outside the store": (
        lambda w, r: edit_manifest(r, lambda m: m["shards"][0].update(
            file="../../etc/passwd")), "HMAC"),
    "an unlisted file": (lambda w, r: _write(r, "labels.npy", b"x"), "labels.npy"),
}


for _name, (_edit, _frag) in _FORGERIES.items():
    case(f"verify --key a release forged with {_name}", _frag)(_verify_after(_edit, key=True))
case("verify --key with another key", "wrong key")(
    lambda w, t: ["verify", str(w["release"]), "--key", str(w["other_key"])])


# -- train -------------------------------------------------------------------------------
def train_args(w, t, data=None, out="m.pt", *extra: str) -> list[str]:
    return ["train", "--data", str(data or w["release"]), "--out", str(t / out),
            "--budget", "smoke", "--quiet", *extra]


case("train on a missing path", "does not exist", out="m.pt")(
    lambda w, t: train_args(w, t, t / "none"))
case("train on results", "medveil.store/1", out="m.pt")(
    lambda w, t: train_args(w, t, w["results"]))
case("train --epochs 0", "--epochs", out="m.pt")(
    lambda w, t: train_args(w, t, None, "m.pt", "--epochs", "0"))
case("train --steps -3", "--steps", out="m.pt")(
    lambda w, t: train_args(w, t, None, "m.pt", "--steps", "-3"))
case("train --budget nope", "budget", out="m.pt")(
    lambda w, t: [*train_args(w, t)[:-3], "--budget", "nope"])
case("train --budget quik", "Did you mean 'quick'", out="m.pt")(
    lambda w, t: [*train_args(w, t)[:-3], "--budget", "quik"])
case("train mixing releases and plaintext", "mixes", out="m.pt")(
    lambda w, t: [*train_args(w, t), "--data", str(w["data"])])
case("train on negative labels", "negative", out="m.pt")(
    lambda w, t: train_args(w, t, bad_npz(t, train_labels=-np.ones(40, np.int64))))


@case("train on a tampered release", "SHA-256", out="m.pt")
def _(w, t):
    rel = copy_release(w, t)
    data = bytearray((rel / "train.labels.npy").read_bytes())
    data[-1] ^= 1
    (rel / "train.labels.npy").write_bytes(bytes(data))
    return train_args(w, t, rel)


@case("train on a release with forged negative labels (consistent, no key)", "negative",
      out="m.pt")
def _(w, t):
    rel = copy_release(w, t)
    reseal_shard(rel, "train.labels.npy", -np.ones(40, np.int64))
    return train_args(w, t, rel)


@case("train on a release with forged huge labels (consistent, no key)", "1000 classes",
      out="m.pt")
def _(w, t):
    rel = copy_release(w, t)
    reseal_shard(rel, "train.labels.npy", np.full(40, 10**9, np.int64))
    return train_args(w, t, rel)


@case("train over an existing model", "already exists", out="m.pt")
def _(w, t):
    shutil.copy(w["model"], t / "m.pt")
    return train_args(w, t)


@case("train --force over a user's file", "not an output medveil wrote", out="m.pt")
def _(w, t):
    (t / "m.pt").write_text("not a model")
    return train_args(w, t, None, "m.pt", "--force")


@case("train --out inside the release", "input")
def _(w, t):
    rel = copy_release(w, t)
    return train_args(w, t, rel, "rel/m.pt")


# -- predict -----------------------------------------------------------------------------
def predict_args(w, t, *, model=None, data=None, out="res", extra=()) -> list[str]:
    return ["predict", "--model", str(model or w["model"]), "--data", str(data or w["release"]),
            "--out", str(t / out), *extra]


case("predict with a missing model", "does not exist", out="res")(
    lambda w, t: predict_args(w, t, model=t / "none.pt"))
case("predict with a model that is not one", "not a medveil model", out="res")(
    lambda w, t: [(t / "m.pt").write_text("x") and "predict",
                  *predict_args(w, t, model=t / "m.pt")[1:]])
case("predict with a key file as model", "not a medveil model", out="res")(
    lambda w, t: predict_args(w, t, model=w["key"]))
case("predict on a split the release lacks", "no split 'holdout'", out="res")(
    lambda w, t: predict_args(w, t, extra=("--split", "holdout")))
case("predict on plaintext without a model", "--model", out="res")(
    lambda w, t: ["predict", "--data", str(w["data"]), "--out", str(t / "res")])


@case("predict over existing results", "already exists", out="res")
def _(w, t):
    shutil.copytree(w["results"], t / "res")
    return predict_args(w, t)


@case("predict --force onto the model file", "input", out="m.pt")
def _(w, t):
    shutil.copy(w["model"], t / "m.pt")
    return predict_args(w, t, model=t / "m.pt", out="m.pt", extra=("--force",))


@case("predict on a release with a flipped view byte", "SHA-256", out="res")
def _(w, t):
    rel = copy_release(w, t)
    data = bytearray((rel / "test.view.npy").read_bytes())
    data[200] ^= 0xFF
    (rel / "test.view.npy").write_bytes(bytes(data))
    return predict_args(w, t, data=rel)


# -- decode (the processor's results, treated as an adversary's) --------------------------
def decode_args(w, t, results, *extra: str, out="pred.csv") -> list[str]:
    return ["decode", "--results", str(results), "--key", str(w["key"]), "--state",
            str(w["state"]), "--out", str(t / out), *extra]


def copy_results(w, t) -> Path:
    shutil.copytree(w["results"], t / "res")
    return t / "res"


case("decode missing results", "does not exist", out="pred.csv")(
    lambda w, t: decode_args(w, t, t / "none"))
case("decode a release as results", "medveil.results/1", out="pred.csv")(
    lambda w, t: decode_args(w, t, w["release"]))


@case("decode results with a flipped byte", "SHA-256", out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    name = next(p for p in res.glob("*.npy"))
    data = bytearray(name.read_bytes())
    data[-3] ^= 0x10
    name.write_bytes(bytes(data))
    return decode_args(w, t, res)


@case("decode results naming another split", "exactly one split", out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    edit_manifest(res, lambda m: m.update(split="val"))
    return decode_args(w, t, res)


@case("decode results that dropped rows (consistent manifest)", "results for split",
      out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    probs = np.load(res / "test.probabilities.npy")[:-2]
    reseal_shard(res, "test.probabilities.npy", probs)
    edit_manifest(res, lambda m: m["splits"]["test"].update(count=len(probs)))
    return decode_args(w, t, res)


@case("decode results for another release", "do not answer the release", out="pred.csv")
def _(w, t):
    return ["decode", "--results", str(w["results"]), "--key", str(w["key"]), "--state",
            str(w["state2"]), "--out", str(t / "pred.csv")]


@case("decode results claiming another release", "do not answer the release",
      out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    edit_manifest(res, lambda m: m.update(release="0" * 64))
    return decode_args(w, t, res)


@case("decode results of an unknown protocol", "protocol", out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    edit_manifest(res, lambda m: m.update(protocol={"name": "veiw"}))
    return decode_args(w, t, res)


@case("decode results without protocol", "protocol", out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    edit_manifest(res, lambda m: m.pop("protocol"))
    return decode_args(w, t, res)


@case("decode results with NaN probabilities", "probabilities", out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    probs = np.load(res / "test.probabilities.npy")
    probs[0] = np.nan
    reseal_shard(res, "test.probabilities.npy", probs)
    return decode_args(w, t, res)


@case("decode results with probabilities of the wrong shape", "probabilities",
      out="pred.csv")
def _(w, t):
    res = copy_results(w, t)
    reseal_shard(res, "test.probabilities.npy", np.zeros((16,), np.float64))
    return decode_args(w, t, res)


case("decode with the state as a file", "is a file", out="pred.csv")(
    lambda w, t: [*decode_args(w, t, w["results"])[:6], str(w["data"]),
                  *decode_args(w, t, w["results"])[7:]])
case("decode with a missing state", "owner-state", out="pred.csv")(
    lambda w, t: [*decode_args(w, t, w["results"])[:6], str(t / "nostate"),
                  *decode_args(w, t, w["results"])[7:]])


@case("decode with a corrupt state", "corrupt", out="pred.csv")
def _(w, t):
    shutil.copytree(w["state"], t / "st")
    (t / "st" / "state.json").write_text("{bad")
    return [*decode_args(w, t, w["results"])[:6], str(t / "st"),
            *decode_args(w, t, w["results"])[7:]]


case("decode with another owner's key", "key", out="pred.csv")(
    lambda w, t: [*decode_args(w, t, w["results"])[:4], str(w["other_key"]),
                  *decode_args(w, t, w["results"])[5:]])
case("decode --json into a folder", "--json")(
    lambda w, t: decode_args(w, t, w["results"], "--data", str(w["data"]), "--json", str(t)))
case("decode --out onto the results", "input")(
    lambda w, t: [*decode_args(w, t, w["results"])[:-1], str(w["results"]), "--force"])


@case("decode --force over a user's CSV", "not an output medveil wrote", out="pred.csv")
def _(w, t):
    (t / "pred.csv").write_text("patient,diagnosis\n")
    return decode_args(w, t, w["results"], "--force")


@case("decode against the wrong data set", "predictions for", out="pred.csv")
def _(w, t):
    return decode_args(w, t, w["results"], "--data", "cxr-demo")


# -- recover -----------------------------------------------------------------------------
def recover_args(w, t, *, key=None, out="rec.npz", data=None, extra=()) -> list[str]:
    return ["recover", "--key", str(key or w["key"]), "--data", str(data or w["release"]),
            "--state", str(w["state"]), "--out", str(t / out), *extra]


case("recover with another key", "wrong key", out="rec.npz")(
    lambda w, t: recover_args(w, t, key=w["other_key"]))
case("recover from results", "medveil.store/1", out="rec.npz")(
    lambda w, t: recover_args(w, t, data=w["results"]))


@case("recover over an existing file", "already exists", out="rec.npz")
def _(w, t):
    (t / "rec.npz").write_bytes(b"x")
    return recover_args(w, t)


@case("recover --force over a user's npz", "not an output medveil wrote", out="rec.npz")
def _(w, t):
    shutil.copy(w["data"], t / "rec.npz")
    return recover_args(w, t, extra=("--force",))


@case("recover --force into a user's folder", "not an output medveil wrote", out="pngs")
def _(w, t):
    (t / "pngs").mkdir()
    (t / "pngs" / "holiday.jpg").write_bytes(b"x")
    return recover_args(w, t, out="pngs", extra=("--force",))


@case("recover from a forged release", "not authentic", out="rec.npz")
def _(w, t):
    rel = copy_release(w, t)
    edit_manifest(rel, lambda m: m.pop("manifest_hmac"))
    return recover_args(w, t, data=rel)


# -- evaluate ----------------------------------------------------------------------------
case("evaluate a missing model", "does not exist")(
    lambda w, t: ["evaluate", "--model", str(t / "none.pt"), "--data", str(w["data"])])
case("evaluate on a release's test split (truth withheld)", "stays with the owner")(
    lambda w, t: ["evaluate", "--model", str(w["model"]), "--data", str(w["release"])])
case("evaluate --json into a folder", "--json")(
    lambda w, t: ["evaluate", "--model", str(w["model"]), "--data", str(w["data"]),
                  "--json", str(t)])
case("evaluate with a 0644 key", "chmod 600")(
    lambda w, t: [shutil.copy(w["key"], t / "k.key") and os.chmod(t / "k.key", 0o644)
                  or "evaluate", "--model", str(w["model"]), "--data", str(w["release"]),
                  "--key", str(t / "k.key")])


# -- bench -------------------------------------------------------------------------------
def bench_args(t, *extra: str, out="bench") -> list[str]:
    return ["bench", "--data", str(WORLD["data"]), "--budget", "smoke", "--quiet", "--out",
            str(t / out), *extra]


case("bench an unknown scheme", "Did you mean", out="bench")(
    lambda w, t: bench_args(t, "--schemes", "plain,obfuscaton"))
case("bench an unknown scheme parameter", "Did you mean 'levels'", out="bench")(
    lambda w, t: bench_args(t, "--schemes", "intensity_lut:levls=3"))
case("bench a bad scheme parameter value", "levels", out="bench")(
    lambda w, t: bench_args(t, "--schemes", "intensity_lut:levels=abc"))
case("bench an empty scheme list", "--schemes", out="bench")(
    lambda w, t: bench_args(t, "--schemes", ","))
case("bench an unknown budget", "budget", out="bench")(
    lambda w, t: bench_args(t, "--budget", "xl"))
case("bench --out a file", "--out", out="bench")(
    lambda w, t: [(t / "bench").write_text("x") and "bench", *bench_args(t)[1:]])


@case("bench --out a user's folder", "--out", out="bench")
def _(w, t):
    (t / "bench").mkdir()
    (t / "bench" / "photos.txt").write_text("x")
    return bench_args(t)


case("bench --seeds that are not integers", "--seeds", out="bench")(
    lambda w, t: bench_args(t, "--seeds", "0,one"))
case("bench --seeds with a seed twice", "twice", out="bench")(
    lambda w, t: bench_args(t, "--seeds", "1,1"))
case("bench an unknown executor", "Did you mean 'processes'", out="bench")(
    lambda w, t: bench_args(t, "--executor", "procesess"))
case("bench --cache a file", "--cache", out="bench")(
    lambda w, t: [(t / "cache").write_text("x") and "bench",
                  *bench_args(t, "--cache", str(t / "cache"))[1:]])


# -- data show and folder layouts ----------------------------------------------------------
case("data show a missing path", "does not exist")(
    lambda w, t: ["data", "show", str(t / "none")])
case("data show --axis 7", "--axis")(lambda w, t: ["data", "show", str(w["data"]), "--axis",
                                                   "7"])
case("data show a file named .nii that is not NIfTI", "NIfTI")(
    lambda w, t: [(t / "fake.nii").write_bytes(b"x" * 400) and "data", "show",
                  str(t / "fake.nii")])
case("data show --window bogus", "window")(
    lambda w, t: ["data", "show", str(w["data"]), "--window", "bogus"])
case("data show --masks on an npz", "--masks")(
    lambda w, t: ["data", "show", str(w["data"]), "--masks", "labels"])


@case("data show --grid over an existing file", "already exists", out="grid.png")
def _(w, t):
    (t / "grid.png").write_bytes(b"mine")
    return ["data", "show", str(w["data"]), "--grid", str(t / "grid.png")]


def retinal_layout(root: Path, *, extra_split: bool = True) -> Path:
    """A public retinal data set's layout (DRIVE): images/, the field-of-view mask/ and the
    vessel annotations 1st_manual/, under training/ and test/, from real CHASE images."""
    from PIL import Image

    chase = load_dataset("chase-demo")
    for split, index in (("training", range(0, 5)), ("test", range(5, 8))):
        if split == "test" and not extra_split:
            continue
        for folder in ("images", "mask", "1st_manual"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in index:
            number = 21 + i
            image = (chase.images[i, 0] * 255).astype(np.uint8)
            vessels = chase.masks[i, 0].astype(np.uint8) * 255
            fov = ((chase.images[i, 0] > 0.05) * 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{number}_{split}.tif")
            Image.fromarray(fov).save(root / split / "mask" / f"{number}_{split}_mask.gif")
            Image.fromarray(vessels).save(root / split / "1st_manual" / f"{number}_manual1.gif")
    return root


case("data show a retinal layout without --masks", "mask", "1st_manual", "--masks")(
    lambda w, t: ["data", "show", str(retinal_layout(t / "drive"))])
case("data show its training folder without --masks", "1st_manual", "--masks")(
    lambda w, t: ["data", "show", str(retinal_layout(t / "drive") / "training")])
case("data show a layout with --masks naming no folder", "--masks")(
    lambda w, t: ["data", "show", str(retinal_layout(t / "drive")), "--masks", "manual"])
case("data show a layout with a --masks pattern matching nothing", "--masks")(
    lambda w, t: ["data", "show", str(retinal_layout(t / "drive") / "training" / "images"),
                  "--masks", "*.xyz"])


@case("data show a folder whose classes are an image/mask layout", "images", "--masks")
def _(w, t):
    from PIL import Image

    for folder, name in (("images", "a.png"), ("normal", "b.png")):
        (t / "set" / folder).mkdir(parents=True)
        Image.fromarray(w["images"]["train"][0]).save(t / "set" / folder / name)
    return ["data", "show", str(t / "set")]


@case("data show a folder with a corrupt PNG", "x.png")
def _(w, t):
    (t / "set" / "a").mkdir(parents=True)
    (t / "set" / "a" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return ["data", "show", str(t / "set")]


# -- multicentre -------------------------------------------------------------------------
case("multicentre --centres 0", "--centres", out="mc")(
    lambda w, t: ["multicentre", "--data", str(w["data"]), "--out", str(t / "mc"),
                  "--centres", "0"])
case("multicentre with an unknown scheme", "Did you mean", out="mc")(
    lambda w, t: ["multicentre", "--data", str(w["data"]), "--out", str(t / "mc"),
                  "--scheme", "privacysf"])


@case("multicentre --force into a user's folder", "not an output medveil wrote", out="mc")
def _(w, t):
    (t / "mc").mkdir()
    (t / "mc" / "x").write_text("x")
    return ["multicentre", "--data", str(w["data"]), "--out", str(t / "mc"), "--force"]


# ----------------------------------------------------------------------------- the checks
def _snapshot(path: Path):
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_file():
        return ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    if path.is_dir():
        return ("dir", sorted((str(p.relative_to(path)), p.is_file() and hashlib.sha256(
            p.read_bytes()).hexdigest()) for p in path.rglob("*") if not p.is_symlink()))
    return None


def test_there_are_enough_distinct_cases():
    assert len({c.name for c in CASES}) == len(CASES) >= 120


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line(bad: Case, world, tmp_path, capsys):
    WORLD.update(world)
    argv = [str(a) for a in bad.setup(world, tmp_path)]
    out = tmp_path / bad.out if bad.out else None
    before = _snapshot(out) if out else None
    world_before = {k: _snapshot(world[k]) for k in ("release", "results", "state", "key")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert stop.value.code == 2, f"{bad.name}: exit {stop.value.code}\n{err}\n{captured.out}"
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1, err
    assert err.startswith("medveil: error: "), err
    for fragment in bad.fragments:
        assert fragment.lower() in err.lower(), f"{bad.name}: {fragment!r} not in {err!r}"
    if out is not None:
        assert _snapshot(out) == before, f"{bad.name}: {out} changed"
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not leftovers, leftovers
    assert {k: _snapshot(world[k]) for k in world_before} == world_before


@pytest.mark.parametrize("argv", [
    ["protect", "--scheme", "plain", "--key", "{key}", "--data", "{data}", "--out", "{tmp}/o",
     "--param", "levels=abc"],
    ["verify", "{data}"],
    ["train", "--data", "{tmp}/none", "--out", "{tmp}/m.pt"],
])
def test_bad_input_as_a_separate_process(argv, world, tmp_path):
    """The console script, as a user runs it: the same one line, exit 2."""
    argv = [a.format(key=world["key"], data=world["data"], tmp=tmp_path) for a in argv]
    result = subprocess.run([*MEDVEIL, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
