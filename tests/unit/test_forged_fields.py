"""Forged fields never reach code that trusts them: every kind of forgery of a file the
owner or the processor reads is a clear one-line error, exit 2, nothing written.

Properties over generated forgeries (hypothesis): npy headers declaring any shape,
manifest fields of any wrong type, owner-state archives with any byte flipped or cut,
model records with any field edited; plus the results that claim no release and the
model whose outputs are NaN.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medveil.errors import IntegrityError
from medveil.npy import read_npy
from tests.conftest import invoke

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A real plain release with owner state, a model, and its results (smoke budget)."""
    root = tmp_path_factory.mktemp("forged")
    for args in (("keygen", str(root / "owner.key")),
                 ("protect", "--scheme", "plain", "--key", str(root / "owner.key"), "--data",
                  "cxr-demo", "--out", str(root / "rel"), "--state", str(root / "state"),
                  "--budget", "smoke"),
                 ("train", "--data", str(root / "rel"), "--out", str(root / "m.pt"),
                  "--budget", "smoke", "--quiet"),
                 ("predict", "--model", str(root / "m.pt"), "--data", str(root / "rel"),
                  "--out", str(root / "res"))):
        code, said = invoke(*args)
        assert code == 0, said
    return root


def _copy(room: Path, name: str, tmp: Path) -> Path:
    target = tmp / name
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    (shutil.copytree if (room / name).is_dir() else shutil.copy2)(room / name, target)
    return target


def _refused(*args: str, where: Path | None = None) -> str:
    """Run a command that must refuse: exit 2, one line, no traceback, ``where`` unwritten."""
    code, said = invoke(*args)
    assert code == 2, said
    assert "Traceback" not in said and len(said.strip().splitlines()) == 1, said
    if where is not None:
        assert not where.exists()
    return said


def _reseal(folder: Path, shard: str, data: bytes) -> None:
    """Replace a shard and re-hash it in the manifest, as an attacker without the key can
    (the manifest's HMAC only binds it for a reader who has the key)."""
    (folder / shard).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["shards"]:
        if entry["file"] == shard:
            entry["bytes"] = len(data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


SHAPE = st.lists(st.integers(0, 10**6), min_size=1, max_size=5)


@SETTINGS
@given(shape=SHAPE, dtype=st.sampled_from(["<f4", "<f8", "|u1", "<i8"]),
       payload=st.integers(0, 4096))
def test_an_npy_header_never_allocates_more_than_its_bytes(shape, dtype, payload):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    data = header.getvalue() + b"\0" * payload
    declared = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if declared == payload:
        assert read_npy(data, where="x").shape == tuple(shape)
    else:
        with pytest.raises(IntegrityError, match="declares|bound"):
            read_npy(data, where="x")


def test_a_resealed_shard_with_a_huge_header_is_refused_everywhere(room, tmp_path):
    release = _copy(room, "rel", tmp_path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (40, 1, 100000, 100000)})
    _reseal(release, "test.view.npy", header.getvalue() + b"\0" * 128)
    manifest = json.loads((release / "manifest.json").read_text())
    for entry in manifest["shards"]:  # the manifest agrees with the forged header
        if entry["file"] == "test.view.npy":
            entry["shape"] = [40, 1, 100000, 100000]
    (release / "manifest.json").write_text(json.dumps(manifest))
    _refused("verify", str(release))
    _refused("train", "--data", str(release), "--out", str(tmp_path / "m.pt"), "--budget",
             "smoke", "--quiet", where=tmp_path / "m.pt")
    _refused("predict", "--model", str(room / "m.pt"), "--data", str(release), "--out",
             str(tmp_path / "r"), where=tmp_path / "r")


JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       st.text(max_size=8), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
RESULT_FIELDS = [("scheme",), ("scheme", "params"), ("scheme", "name"), ("protocol",),
                 ("protocol", "name"), ("release",), ("release_key_fingerprint",),
                 ("split",), ("dataset", "image_shape")]


def _valid(path: tuple[str, ...], value) -> bool:
    """Whether ``value`` at ``path`` is one a results manifest may hold."""
    import jsonschema

    from medveil.manifest_schema import RESULTS_SCHEMA

    node = RESULTS_SCHEMA
    for part in path:
        node = node["properties"][part] if "properties" in node else \
            next(o for o in node["anyOf"] if "properties" in o)["properties"][part]
    try:
        jsonschema.validate(value, node)
    except jsonschema.ValidationError:
        return False
    return True


@SETTINGS
@given(field=st.sampled_from(RESULT_FIELDS), value=JSON_VALUE)
def test_a_results_manifest_field_of_any_wrong_type_is_refused(room, tmp_path, field, value):
    results = _copy(room, "res", tmp_path)
    manifest = json.loads((results / "manifest.json").read_text())
    node = manifest
    for part in field[:-1]:
        node = node[part]
    node[field[-1]] = value
    (results / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "pred.csv"
    out.unlink(missing_ok=True)
    code, said = invoke("decode", "--results", str(results), "--key", str(room / "owner.key"),
                        "--state", str(room / "state"), "--out", str(out))
    if _valid(field, value):
        return  # a value the format allows: other checks (digest, count) decide
    assert code == 2 and "Traceback" not in said, said
    assert not out.exists()


def test_results_that_name_no_release_are_refused(room, tmp_path):
    results = _copy(room, "res", tmp_path)
    manifest = json.loads((results / "manifest.json").read_text())
    manifest["release"] = None
    (results / "manifest.json").write_text(json.dumps(manifest))
    said = _refused("decode", "--results", str(results), "--key", str(room / "owner.key"),
                    "--state", str(room / "state"), "--out", str(tmp_path / "p.csv"),
                    where=tmp_path / "p.csv")
    assert "name no release" in said


@SETTINGS
@given(position=st.floats(0, 1, exclude_max=True), cut=st.booleans())
def test_an_owner_state_archive_flipped_or_cut_anywhere_is_refused(room, tmp_path, position,
                                                                   cut):
    state = _copy(room, "state", tmp_path)
    archive = state / "arrays.npz"
    data = bytearray(archive.read_bytes())
    at = int(position * len(data))
    if cut:
        data = data[:at]
    else:
        data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    out = tmp_path / "rec.npz"
    out.unlink(missing_ok=True)
    code, said = invoke("recover", "--key", str(room / "owner.key"), "--data", str(room / "rel"),
                        "--state", str(state), "--out", str(out))
    # a flipped byte in a zip's padding or a timestamp can be harmless; never a traceback
    assert code in (0, 2) and "Traceback" not in said, said
    if code == 2:
        assert not out.exists()


RECORD_EDITS = st.sampled_from([
    ("net_config", {"in_channels": "x"}), ("net_config", None), ("net_config", {"widths": 3}),
    ("task", "regression"), ("image_shape", "64"), ("num_classes", [2]),
    ("state_dict", {}), ("config", 7)])


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=RECORD_EDITS)
def test_a_model_record_with_an_edited_field_is_refused(room, tmp_path, edit):
    record = torch.load(room / "m.pt", weights_only=True)
    record[edit[0]] = edit[1]
    forged = tmp_path / "forged.pt"
    torch.save(record, forged)
    _refused("predict", "--model", str(forged), "--data", str(room / "rel"), "--out",
             str(tmp_path / "r"), where=tmp_path / "r")


def test_a_model_that_outputs_nan_is_refused_by_predict_and_evaluate(room, tmp_path):
    record = torch.load(room / "m.pt", weights_only=True)
    record["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point()
                            else v for k, v in record["state_dict"].items()}
    broken = tmp_path / "nan.pt"
    torch.save(record, broken)
    said = _refused("predict", "--model", str(broken), "--data", str(room / "rel"), "--out",
                    str(tmp_path / "r"), where=tmp_path / "r")
    assert "non-finite" in said
    assert "non-finite" in _refused("evaluate", "--model", str(broken), "--data", "cxr-demo",
                                    "--split", "test")
