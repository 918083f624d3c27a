"""Random corruption of releases and data files: a clear error or the same data, nothing else.

Hypothesis truncates files, flips bytes, shuffles manifest fields and writes hostile
shard names; the store loader and the readers must raise a :class:`MedveilError`
or return exactly what they returned before, never another exception.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medveil.data import load_dataset
from medveil.errors import MedveilError
from medveil.keys import Key
from medveil.store import open_store, write_store

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def originals(tmp_path_factory, cxr):
    """A sealed release, an npz and a class folder of real chest X-ray crops."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fuzz")
    key = Key.generate()
    crops = np.ascontiguousarray(cxr.images[:12, :, 16:48, 16:48])
    labels = cxr.labels[:12]
    release = write_store(root / "release", key=key, arrays={
        "train": {"view": crops[:8], "labels": labels[:8]}, "test": {"view": crops[8:]}},
        scheme={"name": "plain", "version": "1", "params": {}},
        dataset={"name": "crops", "task": "classification"}, protocol={"name": "view"})
    pixels = (crops[:, 0] * 255).astype(np.uint8)
    npz = root / "data.npz"
    np.savez(npz, train_images=pixels[:8], train_labels=labels[:8], test_images=pixels[8:],
             test_labels=labels[8:])
    folder = root / "folder"
    for i, image in enumerate(pixels[:6]):
        (folder / str(labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(labels[i]) / f"{i}.png")
    return {"key": key, "release": release, "npz": npz, "folder": folder,
            "store": open_store(release, key=key), "data": load_dataset(npz),
            "pictures": load_dataset(folder)}


def _same_store(a, b) -> bool:
    return a.arrays.keys() == b.arrays.keys() and all(
        a.arrays[s].keys() == b.arrays[s].keys() and all(
            np.array_equal(a.arrays[s][k], b.arrays[s][k]) for k in a.arrays[s])
        for s in a.arrays)


def _same_set(a, b) -> bool:
    return (np.array_equal(a.images, b.images) and np.array_equal(a.splits, b.splits)
            and (a.labels is None) == (b.labels is None)
            and (a.labels is None or np.array_equal(a.labels, b.labels)))


def _flip(path: Path, position: float, bit: int) -> None:
    data = bytearray(path.read_bytes())
    if data:
        data[int(position * (len(data) - 1))] ^= 1 << bit
        path.write_bytes(bytes(data))


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(fraction * len(data))])


CORRUPTION = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 0.999), st.just(0)),
)
HOSTILE = st.one_of(
    st.sampled_from(["../x.npy", "/etc/passwd", "train.view.npy/../../x", "..", ".",
                     "manifest.json", "test.view.npy", "a\x00b", "x" * 300, "", "train..npy"]),
    st.text(min_size=0, max_size=40),
)


def _refused_or_same(load, same) -> None:
    """Run ``load``: a ``MedveilError`` is a pass; anything loaded must satisfy ``same``."""
    try:
        loaded = load()
    except MedveilError:
        return
    assert same(loaded)


def _corrupt(path: Path, corruption) -> None:
    kind, amount, bit = corruption
    _flip(path, amount, bit) if kind == "flip" else _truncate(path, amount)


def _loads_or_refuses(path: Path, key: Key, original) -> None:
    _refused_or_same(lambda: open_store(path, key=key), lambda s: _same_store(s, original))


@SETTINGS
@given(which=st.integers(0, 100), corruption=CORRUPTION)
def test_store_corruption_is_refused_or_harmless(originals, which, corruption):
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(originals["release"], Path(tmp) / "r"))
        files = sorted(copy.iterdir())
        target = files[which % len(files)]
        _corrupt(target, corruption)
        _loads_or_refuses(copy, originals["key"], originals["store"])


@SETTINGS
@given(entry=st.integers(0, 10), fields=st.permutations(
    ["file", "split", "kind", "shape", "dtype", "bytes", "sha256"]))
def test_shuffled_manifest_fields_are_refused_or_harmless(originals, entry, fields):
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(originals["release"], Path(tmp) / "r"))
        manifest = json.loads((copy / "manifest.json").read_text())
        shard = manifest["shards"][entry % len(manifest["shards"])]
        order = ["file", "split", "kind", "shape", "dtype", "bytes", "sha256"]
        values = [shard[f] for f in order]
        shard.update(dict(zip(fields, values, strict=True)))
        (copy / "manifest.json").write_text(json.dumps(manifest))
        _loads_or_refuses(copy, originals["key"], originals["store"])
        # without the key: integrity only, the same answer
        _refused_or_same(lambda: open_store(copy),
                         lambda s: _same_store(s, originals["store"]))


@SETTINGS
@given(entry=st.integers(0, 10), name=HOSTILE, field=st.sampled_from(["file", "kind", "split"]))
def test_hostile_shard_names_are_refused(originals, entry, name, field):
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(originals["release"], Path(tmp) / "r"))
        manifest = json.loads((copy / "manifest.json").read_text())
        shard = manifest["shards"][entry % len(manifest["shards"])]
        unchanged = shard[field] == name
        shard[field] = name
        (copy / "manifest.json").write_text(json.dumps(manifest))
        _refused_or_same(lambda: open_store(copy),
                         lambda s: unchanged and _same_store(s, originals["store"]))


@SETTINGS
@given(corruption=CORRUPTION)
def test_npz_corruption_is_refused_or_harmless(originals, corruption):
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "data.npz"
        shutil.copy(originals["npz"], copy)
        _corrupt(copy, corruption)
        _refused_or_same(lambda: load_dataset(copy), lambda d: _same_set(d, originals["data"]))


@SETTINGS
@given(which=st.integers(0, 100), corruption=CORRUPTION)
def test_picture_corruption_is_refused_or_harmless(originals, which, corruption):
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(originals["folder"], Path(tmp) / "f"))
        files = sorted(p for p in copy.rglob("*.png"))
        _corrupt(files[which % len(files)], corruption)
        _refused_or_same(lambda: load_dataset(copy),
                         lambda d: _same_set(d, originals["pictures"]))
