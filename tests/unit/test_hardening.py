"""Forged releases, safe outputs, names that never leave, withheld truth, folder layouts."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medveil.atomic import (
    _libc_exchange,
    atomic_directory,
    atomic_write_bytes,
    remove_stale_siblings,
)
from medveil.data import load_dataset
from medveil.errors import IntegrityError, KeyMismatchError, MedveilError
from medveil.keys import Key
from medveil.store import open_store, write_store
from tests.forge import edit_manifest, reseal_shard, swap_views


@pytest.fixture()
def release(tmp_path, cxr_crops, key) -> Path:
    """A small release of real crops, sealed with ``key``."""
    arrays = {"train": {"view": cxr_crops[:6], "labels": np.arange(6) % 2},
              "test": {"view": cxr_crops[6:]}}
    return write_store(tmp_path / "rel", arrays=arrays, key=key,
                       scheme={"name": "plain", "version": "1", "params": {}},
                       dataset={"name": "crops", "task": "classification"},
                       protocol={"name": "view"})


def _swap(path: Path) -> None:
    edit_manifest(path, lambda m: swap_views(path, m))


FORGERIES = {
    "null fingerprint": lambda p: edit_manifest(p, lambda m: (m.update(key_fingerprint=None),
                                                      m.pop("manifest_hmac"))),
    "missing HMAC": lambda p: edit_manifest(p, lambda m: m.pop("manifest_hmac")),
    "shard path outside": lambda p: edit_manifest(p, lambda m: m["shards"][0].update(
        file="../outside.npy")),
    "unlisted file": lambda p: (p / "notes.npy").write_bytes(b"x"),
    "swapped shards": _swap,
    "edited labels with new hash": lambda p: reseal_shard(p, "train.labels.npy",
                                                     np.ones(6, np.int64)),
    "changed scheme params": lambda p: edit_manifest(p, lambda m: m["scheme"]["params"].update(
        levels=2)),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_the_seven_forgeries_are_refused_when_loading_with_the_key(forgery, release, key):
    open_store(release, key=key)  # the genuine release loads
    FORGERIES[forgery](release)
    with pytest.raises(MedveilError):
        open_store(release, key=key)


def test_a_null_fingerprint_is_a_forgery_not_an_unsigned_store(release, key):
    FORGERIES["null fingerprint"](release)
    open_store(release)  # consistent without a key: integrity holds, authenticity unknown
    with pytest.raises(IntegrityError, match="not authentic"):
        open_store(release, key=key)
    with pytest.raises(KeyMismatchError):
        open_store(write_store(release.parent / "other", arrays={"t": {"view": np.zeros(
            (1, 1, 4, 4), np.float32)}}, key=Key.generate(),
            scheme={"name": "plain", "version": "1", "params": {}}, dataset={},
            protocol={"name": "view"}), key=key)


def test_verify_without_a_key_says_it_did_not_authenticate(release, key, capsys):
    from medveil.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["verify", str(release)])
    assert stop.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "authenticity NOT checked" in said and "--key" in said


# ----------------------------------------------------------------------------- outputs
def test_outputs_are_owner_only_whatever_the_umask(tmp_path, release):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("patient data")
        atomic_write_bytes(tmp_path / "f.csv", b"index,prob_0\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "out" / "a.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "f.csv").stat().st_mode) == 0o600
    for path in [release, *release.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) in (0o700, 0o600), path


def test_force_swaps_in_one_step_and_leaves_no_sibling(tmp_path, release, key, cxr_crops):
    write_store(release, arrays={"test": {"view": cxr_crops[:3]}}, key=key, force=True,
                scheme={"name": "plain", "version": "1", "params": {}}, dataset={},
                protocol={"name": "view"})
    assert open_store(release, key=key).manifest["splits"] == {"test": {"count": 3}}
    assert [p.name for p in release.parent.iterdir() if p.name.startswith(".")] == []


def test_the_exchange_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("b")
    if not _libc_exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported on this file system")
    assert (tmp_path / "a" / "x").read_text() == "b"
    assert (tmp_path / "b" / "x").read_text() == "a"


def test_stale_siblings_of_killed_runs_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / ".out.tmp-999999999-deadbeef"
    dead.mkdir()
    (dead / "plaintext.npy").write_bytes(b"patient")
    not_ours = tmp_path / ".out.old-0badf00d"  # no PID: not a name medveil makes
    not_ours.write_bytes(b"x")
    live = tmp_path / f".out.tmp-{os.getppid()}-cafecafe"
    live.mkdir()
    other = tmp_path / ".other.tmp-999999999-deadbeef"
    other.mkdir()
    removed = remove_stale_siblings(tmp_path / "out")
    assert [p.name for p in removed] == [dead.name]
    assert live.exists() and other.exists() and not_ours.exists() and not dead.exists()


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out") as tmp:
        (tmp / "half.npy").write_bytes(b"x")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- names, truth
def _patient_folder(root: Path, cxr) -> Path:
    """Real images under a folder and file names that identify patients."""
    from PIL import Image

    folder = root / "Smith_Jane_DOB1970"
    for label, cls in enumerate(("normal", "pneumonia")):
        (folder / cls).mkdir(parents=True)
        picks = np.nonzero(cxr.labels == label)[0][:12]
        for i in picks:
            Image.fromarray((cxr.images[i, 0] * 255).astype(np.uint8)).save(
                folder / cls / f"DOE_JOHN_MRN{1234560 + i}.png")
    return folder


def test_no_file_or_folder_name_and_no_test_truth_leaves(tmp_path, cxr, key):
    from medveil.workflow import predict, protect_dataset, train

    data = load_dataset(_patient_folder(tmp_path, cxr))
    assert data.name.startswith("data-") and "Smith" not in data.name
    protect_dataset(data, scheme="plain", key=key, out=tmp_path / "rel",
                    state=tmp_path / "state")
    train([str(tmp_path / "rel")], out=tmp_path / "m.pt", budget="smoke")
    predict(tmp_path / "m.pt", str(tmp_path / "rel"), split="test", out=tmp_path / "res")
    leaving = [*(tmp_path / "rel").iterdir(), tmp_path / "m.pt", *(tmp_path / "res").iterdir()]
    for path in leaving:
        blob = path.read_bytes()
        for word in (b"Smith", b"DOE_JOHN", b"MRN", b"DOB1970", b"normal.png"):
            assert word not in blob, (path, word)
    shards = {p.name for p in (tmp_path / "rel").iterdir()}
    assert "train.labels.npy" in shards and "test.view.npy" in shards
    assert not any(name.startswith("test.") and name != "test.view.npy" for name in shards)


def test_a_label_names_the_data_set(tmp_path, cxr):
    data = load_dataset(_patient_folder(tmp_path, cxr), label="site-a")
    assert data.name == "site-a"


def test_recovered_sets_carry_no_test_truth_and_read_back(tmp_path, cxr_crops, key):
    from medveil.workflow import recover_release

    arrays = {"train": {"view": cxr_crops[:6], "labels": np.arange(6) % 2},
              "test": {"view": cxr_crops[6:]}}
    write_store(tmp_path / "rel", arrays=arrays, key=key, dataset={"name": "crops"},
                scheme={"name": "plain", "version": "1", "params": {}},
                protocol={"name": "view"})
    recover_release(tmp_path / "rel", key=key, state=None, out=tmp_path / "rec.npz")
    with np.load(tmp_path / "rec.npz") as archive:
        assert "test_labels" not in archive.files and "train_labels" in archive.files
    back = load_dataset(tmp_path / "rec.npz")
    assert back.withheld == ("test",)
    assert back.split("test").labels is None
    np.testing.assert_array_equal(back.split("train").labels, np.arange(6) % 2)


# ----------------------------------------------------------------------------- layouts
def test_a_retinal_layout_reads_with_masks_and_not_without(tmp_path):
    from tests.integration.test_bad_inputs import retinal_layout

    root = retinal_layout(tmp_path / "drive")
    with pytest.raises(MedveilError, match="1st_manual, mask"):
        load_dataset(root)
    data = load_dataset(root, masks="1st_manual")
    assert data.task == "segmentation"
    assert set(data.split_names) >= {"train", "test"}
    assert (data.splits == "test").sum() == 3
    chase = load_dataset("chase-demo")
    assert data.masks.mean() == pytest.approx(chase.masks.mean(), abs=0.01)  # vessels, ~7 %
    fov = load_dataset(root, masks="mask")
    assert fov.masks.mean() > 3 * data.masks.mean()  # the field of view is not the target


def test_a_sibling_layout_takes_a_mask_pattern(tmp_path):
    from PIL import Image

    chase = load_dataset("chase-demo")
    for i in range(4):
        Image.fromarray((chase.images[i, 0] * 255).astype(np.uint8)).save(
            tmp_path / f"Image_{i:02d}L.png")
        Image.fromarray(chase.masks[i, 0] * 255).save(tmp_path / f"Image_{i:02d}L_1stHO.png")
        Image.fromarray(chase.masks[i, 0] * 255).save(tmp_path / f"Image_{i:02d}L_2ndHO.png")
    data = load_dataset(tmp_path, masks="*_1stHO.png")
    assert data.task == "segmentation" and len(data) == 4


def test_classes_that_are_split_folders_of_layouts_are_refused(tmp_path, cxr):
    src = _patient_folder(tmp_path, cxr)
    shutil.copytree(src / "normal", tmp_path / "set" / "images")
    (tmp_path / "set" / "other").mkdir()
    with pytest.raises(MedveilError, match="--masks"):
        load_dataset(tmp_path / "set")


OURS_DEAD = st.builds(lambda kind, hexs: f".out.{kind}-999999999-{hexs}",
                      st.sampled_from(["tmp", "old"]),
                      st.text(alphabet="0123456789abcdef", min_size=8, max_size=8))
OURS_LIVE = st.builds(lambda hexs: f".out.tmp-{os.getppid()}-{hexs}",
                      st.text(alphabet="0123456789abcdef", min_size=8, max_size=8))
ANY_NAME = st.text(alphabet="._-abcdefot0123456789", min_size=1, max_size=24)


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.one_of(ANY_NAME, OURS_DEAD, OURS_LIVE), max_size=8, unique=True))
def test_sibling_cleanup_removes_only_names_medveil_makes(tmp_path_factory, names):
    """Whatever a user keeps beside an output, only ``.NAME.tmp|old-PID-RANDOM8`` of a dead
    process is ever removed."""
    import re

    folder = tmp_path_factory.mktemp("siblings")
    for name in names:
        if name not in (".", ".."):
            (folder / name).write_bytes(b"user")
    removed = {p.name for p in remove_stale_siblings(folder / "out")}
    ours = re.compile(r"^\.out\.(?:tmp|old)-\d+-[0-9a-f]{8}$")
    assert all(ours.match(name) for name in removed)
    assert removed == {n for n in names if ours.match(n) and "-999999999-" in n}
    kept = {n for n in names if n not in (".", "..")} - removed
    assert {p.name for p in folder.iterdir()} == kept


def _identifying_classes(root: Path, cxr) -> Path:
    """Real images whose class folders carry identifiers (a study's patient folders)."""
    from PIL import Image

    folder = root / "site"
    for label, cls in enumerate(("DOE_JOHN_MRN1234567", "ROE_JANE_MRN7654321")):
        (folder / cls).mkdir(parents=True)
        for i in np.nonzero(cxr.labels == label)[0][:12]:
            Image.fromarray((cxr.images[i, 0] * 255).astype(np.uint8)).save(
                folder / cls / f"{i}.png")
    return folder


@pytest.mark.parametrize("names", ["index", "normal,pneumonia"])
def test_class_names_that_identify_stay_with_the_owner(tmp_path, cxr, key, names):
    from medveil.owner_state import read_sent_release
    from medveil.workflow import protect_dataset

    data = load_dataset(_identifying_classes(tmp_path, cxr))
    assert "DOE_JOHN_MRN1234567" in data.class_names  # the folders are the classes
    protect_dataset(data, scheme="plain", key=key, out=tmp_path / "rel",
                    state=tmp_path / "state", class_names=names)
    for path in (tmp_path / "rel").iterdir():
        assert b"MRN" not in path.read_bytes(), path
    manifest = json.loads((tmp_path / "rel" / "manifest.json").read_text())
    assert manifest["dataset"]["class_names"] == (
        ["class_0", "class_1"] if names == "index" else ["normal", "pneumonia"])
    kept = read_sent_release(tmp_path / "state")["class_names"]
    assert kept == ["DOE_JOHN_MRN1234567", "ROE_JANE_MRN7654321"]


@pytest.mark.parametrize("bad", ["a", "a,a", "a,b,c", "a,b c", ""])
def test_class_names_must_name_every_class_once(tmp_path, cxr, key, bad):
    from medveil.workflow import protect_dataset

    data = load_dataset(_identifying_classes(tmp_path, cxr))
    with pytest.raises(MedveilError, match="class-names"):
        protect_dataset(data, scheme="plain", key=key, out=tmp_path / "rel",
                        class_names=bad)
    assert not (tmp_path / "rel").exists()
