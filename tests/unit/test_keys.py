from __future__ import annotations

import base64
import pickle
import stat

import numpy as np
import pytest

from medveil.errors import KeyFileError
from medveil.keys import Key
from tests.conftest import key_secret


def test_save_load_roundtrip_with_mode_0600(tmp_path, key):
    path = key.save(tmp_path / "owner.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Key.load(path)
    assert loaded == key and loaded.fingerprint == key.fingerprint


def test_refuses_to_overwrite_without_force(tmp_path, key, other_key):
    path = key.save(tmp_path / "owner.key")
    with pytest.raises(KeyFileError, match="--force"):
        other_key.save(path)
    other_key.save(path, force=True)
    assert Key.load(path) == other_key


def test_repr_and_pickle_never_show_key_bytes(key):
    secret = key_secret(key)
    text = repr(key) + str(key)
    assert secret.hex() not in text and base64.b64encode(secret).decode() not in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        pickle.dumps(key.stream("x"))


def test_corrupt_and_foreign_key_files_are_refused(tmp_path, key):
    path = key.save(tmp_path / "k")
    text = path.read_text().replace(key.fingerprint, "0" * 32)
    path.write_text(text)
    with pytest.raises(KeyFileError, match="corrupt"):
        Key.load(path)
    (tmp_path / "junk").write_text("hello")
    (tmp_path / "junk").chmod(0o600)
    with pytest.raises(KeyFileError, match="not a medveil key file"):
        Key.load(tmp_path / "junk")
    with pytest.raises(KeyFileError, match="does not exist"):
        Key.load(tmp_path / "missing")


def test_derive_is_deterministic_and_purpose_separated(key, other_key):
    assert key.derive("a") == key.derive("a")
    assert key.derive("a") != key.derive("b")
    assert key.derive("a") != other_key.derive("a")
    assert len(key.derive("a", 64)) == 64


def test_streams_are_reproducible_and_well_distributed(key):
    a, b = key.stream("p"), key.stream("p")
    u = a.uniform(20000)
    assert np.array_equal(u, b.uniform(20000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    z = key.stream("n").normal(20000)
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    perm = key.stream("perm").permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000))
    assert not np.array_equal(perm, np.arange(1000))
    ints = key.stream("i").integers(7, 7000)
    assert set(np.unique(ints)) == set(range(7))
    assert abs(np.bincount(ints).min() - 1000) < 150
    picks = key.stream("c").choice(50, 10, replace=False)
    assert len(set(picks.tolist())) == 10 and picks.max() < 50
