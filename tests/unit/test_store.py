from __future__ import annotations

import json

import numpy as np
import pytest

from medveil.errors import ConfigError, IntegrityError, KeyMismatchError
from medveil.protocols.view import views_as_imageset
from medveil.store import open_store, verify_store
from medveil.workflow import protect_dataset


@pytest.fixture()
def store(tmp_path, cxr, key):
    small = cxr.head(20)
    protect_dataset(small, scheme="intensity_lut", key=key, out=tmp_path / "store")
    return tmp_path / "store"


def test_manifest_records_scheme_key_and_hashes(store, key, cxr):
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["format"] == "medveil.store/1"
    assert manifest["scheme"]["name"] == "intensity_lut"
    assert manifest["scheme"]["params"] == {"levels": 256}
    assert manifest["key_fingerprint"] == key.fingerprint
    assert manifest["splits"] == {"train": {"count": 20}, "val": {"count": 20},
                                  "test": {"count": 20}}
    kinds = {(s["split"], s["kind"]) for s in manifest["shards"]}
    assert ("train", "labels") in kinds and ("train", "view") in kinds
    assert ("test", "labels") not in kinds  # the test truth stays with the owner
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert not any("ids" in s["file"] for s in manifest["shards"])  # file names never leave


def test_labels_travel_with_the_view_and_views_differ(store, key, cxr):
    loaded = open_store(store, key=key)
    view = loaded.arrays["test"]["view"]
    assert view.shape == (20, 1, 64, 64) and view.dtype == np.float32
    assert loaded.arrays["train"]["labels"].shape == (20,)
    assert "labels" not in loaded.arrays["test"]  # withheld: the owner scores the test split
    views = views_as_imageset(loaded)
    assert views.task == "classification" and views.withheld == ("test",)
    assert views.split("test").labels is None and views.split("train").labels is not None


def test_tampered_shard_is_detected(store):
    shard = store / "test.view.npy"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="tampered"):
        verify_store(store)


def test_truncated_shard_is_detected(store):
    shard = store / "train.labels.npy"
    shard.write_bytes(shard.read_bytes()[:-16])
    with pytest.raises(IntegrityError, match="truncated"):
        open_store(store)


def test_missing_shard_and_manifest(store):
    (store / "val.view.npy").unlink()
    with pytest.raises(IntegrityError, match="missing shard"):
        open_store(store)
    (store / "manifest.json").unlink()
    with pytest.raises(IntegrityError, match="not a medveil release"):
        open_store(store)


def test_forged_manifest_fails_the_hmac(store, key):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["scheme"]["params"]["levels"] = 16
    (store / "manifest.json").write_text(json.dumps(manifest))
    verify_store(store)  # the shards still hash, so without the key this cannot be told
    with pytest.raises(IntegrityError, match="HMAC"):
        verify_store(store, key=key)


def test_wrong_key_is_refused(store, other_key):
    with pytest.raises(KeyMismatchError, match="wrong key"):
        open_store(store, key=other_key)


def test_existing_output_is_not_overwritten_and_crash_leaves_nothing(tmp_path, cxr, key,
                                                                     monkeypatch):
    small = cxr.head(5)
    out = tmp_path / "s"
    protect_dataset(small, scheme="plain", key=key, out=out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        protect_dataset(small, scheme="plain", key=key, out=out)

    import medveil.store as store_module

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_module.np, "save", boom)
    with pytest.raises(RuntimeError):
        protect_dataset(small, scheme="plain", key=key, out=out, force=True)
    with pytest.raises(RuntimeError):
        protect_dataset(small, scheme="plain", key=key, out=tmp_path / "new")
    assert (out / "manifest.json").read_bytes() == before  # the old store is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no half store, no temp
