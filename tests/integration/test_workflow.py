"""Every scheme end to end by role, as separate `medveil` processes passing only files.

The owner protects (release + owner state), the processor trains and predicts with
the release alone (no key file, no state folder), the owner decodes (or a key
holder recovers, trains and predicts on what it recovered). Each workflow's
utility figure must equal the `medveil bench` row on the same data, seed and key
(the bench's reproducible victim key, written to a file through the library), and
nothing the processor received may hold key bytes or the owner state's weights.
Budgets are the named `smoke` budget and small scheme parameters: these tests
check the plumbing and the equality, not the quality.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medveil.attacks.suite import seeded_key
from medveil.data import load_dataset
from tests.conftest import key_secret

MEDVEIL = [sys.executable, "-m", "medveil.cli"]

#: (scheme, bench row / --param list, data set) for every scheme of the mission.
CASES = {
    "plain": ([], "cxr"),
    "obfuscation": (["epochs=1", "width=8", "latent_dim=16"], "cxr"),
    "fesf": (["epochs=1", "max_hosts=16", "width=8"], "cxr"),
    "primis": (["epochs=1", "min_steps=0"], "cxr"),
    "ckks": (["epochs=2", "encrypted_model=true"], "cxr"),
    "privacy_sf": (["steps=8", "map_steps=8", "crop=32", "width=16", "map_width=16",
                    "map_blocks=1", "client_copies=flips", "test_copies=flips"], "chase"),
}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run([*MEDVEIL, *args], capture_output=True, text=True, cwd=cwd,
                            env=env, timeout=600)
    assert result.returncode == 0, f"medveil {' '.join(args)}\n{result.stderr}"
    return result


SOURCES = {"cxr": ["--data", "cxr.npz"], "chase": ["--data", "chase-demo", "--size", "64"]}


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A small 28 px chest X-ray set (real images) and the bench's key, in a folder."""
    root = tmp_path_factory.mktemp("workflow")
    data = load_dataset("cxr-demo", size=28, seed=0)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 96), ("val", 24), ("test", 32)):
        part = data.split(split)
        index = np.sort(rng.choice(len(part), n, replace=False))
        arrays[f"{split}_images"] = np.round(part.images[index, 0] * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = part.labels[index]
    np.savez(root / "cxr.npz", **arrays)
    key = seeded_key("victim", 0)
    key.save(root / "owner.key")
    return {"root": root, "sources": SOURCES, "key": key, "rows": {}}


def bench_row(room, scheme: str) -> dict:
    """The `medveil bench --budget smoke` row of ``scheme`` on its data set (every scheme
    of that data set benched in one run, once per test process)."""
    kind = CASES[scheme][1]
    if kind not in room["rows"]:
        specs = ",".join(":".join([name, *params]) for name, (params, data_kind) in CASES.items()
                         if data_kind == kind and name != "plain")
        run("bench", *SOURCES[kind], "--schemes", specs, "--budget", "smoke", "--quiet",
            "--out", f"bench-{kind}", cwd=room["root"])
        card = json.loads((room["root"] / f"bench-{kind}" / "scorecard.json").read_text())
        room["rows"][kind] = {row["scheme"].split(":")[0]: row for row in card["results"]}
    return room["rows"][kind][scheme]


def _files(*folders: Path) -> list[Path]:
    out = []
    for folder in folders:
        out += [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
    return out


def _state_arrays(state: Path) -> list[np.ndarray]:
    """The owner state's float arrays (its networks, host images, the HE model's weights)."""
    found = []
    with np.load(state / "arrays.npz") as archive:
        for name in archive.files:
            array = archive[name]
            if array.dtype == np.uint8 and array.size > 1000:  # a serialised HE model
                from medveil.he.model import HEModel

                net = HEModel.from_bytes(array.tobytes()).net
                found += [net.first_weight, net.hidden_weight, net.final_weight,
                          np.concatenate([net.first_bias.ravel(), net.hidden_bias.ravel(),
                                          net.final_bias.ravel()])]
            elif array.dtype.kind == "f" and array.size >= 8:
                found.append(array)
    return found


def _patterns(values: np.ndarray) -> dict[int, np.ndarray]:
    """An array's distinct, non-round weights as float32 and float64 bit patterns (round
    numbers such as 1.0 or 0.25 turn up anywhere and prove nothing)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[(np.abs(values) > 1e-3) & (values * 1024 != np.round(values * 1024))]
    return {4: _sorted_distinct(values.astype(np.float32).view("u4")),
            8: _sorted_distinct(values.view("u8"))}


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def _members(sorted_values: np.ndarray, words: np.ndarray) -> np.ndarray:
    """The ``words`` found in ``sorted_values`` (both unsigned integers)."""
    if not len(sorted_values) or not len(words):
        return words[:0]
    at = np.minimum(np.searchsorted(sorted_values, words), len(sorted_values) - 1)
    return words[sorted_values[at] == words]


def _leaked(data: bytes, arrays: list[dict[int, np.ndarray]]) -> bool:
    """Whether any array's weights appear in ``data``: more than 1 % of its patterns (a
    copied array matches almost all; chance matches a handful). Every byte alignment in
    files up to 4 MB; above, the aligned words only (npy and torch files align their
    arrays to 64 bytes, and the big files here are ciphertexts)."""
    for width in (4, 8):
        union = np.sort(np.concatenate([a[width] for a in arrays]))
        found = _sorted_distinct(np.concatenate([
            _members(union, np.frombuffer(data[offset:offset + (len(data) - offset) // width
                                               * width], dtype=f"u{width}"))
            for offset in range(width if len(data) <= 4 << 20 else 1)]))
        for array in arrays:  # each array's patterns are sorted (np.unique)
            patterns = array[width]
            if len(patterns) >= 8 and \
                    len(_members(patterns, found)) > max(8, 0.01 * len(patterns)):
                return True
    return False


def _assert_nothing_leaks(room, state: Path | None, *received: Path) -> None:
    secret = key_secret(room["key"])
    weights = [_patterns(a) for a in _state_arrays(state)] if state is not None else []
    for path in _files(*received):
        data = path.read_bytes()
        assert secret not in data and secret.hex().encode() not in data, path
        assert not (weights and _leaked(data, weights)), f"{path} holds owner-state weights"


def test_the_leak_check_finds_a_copied_array(tmp_path):
    weights = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    noise = np.random.default_rng(1).normal(size=5000).astype(np.float32).tobytes()
    assert not _leaked(noise, [_patterns(weights)])
    assert _leaked(b"xyz" + noise + weights[5:9].astype(np.float64).tobytes(),
                   [_patterns(weights)])


def _metrics(result: subprocess.CompletedProcess) -> dict[str, float]:
    line = result.stdout.strip().splitlines()[-1].split()
    return {line[i]: float(line[i + 1]) for i in range(0, len(line), 2)}


#: protect options beyond the parameters: fesf's hosts are the split the bench uses
#: as its public set (never the owner's patients)
PROTECT_OPTIONS = {"fesf": ["--public", "val"]}


def _protect(room, scheme: str, data_kind: str, params: list[str]) -> tuple[Path, Path]:
    root = room["root"]
    args = ["protect", "--scheme", scheme, "--key", "owner.key", *room["sources"][data_kind],
            "--out", f"{scheme}-release", "--state", f"{scheme}-state", "--budget", "smoke",
            *PROTECT_OPTIONS.get(scheme, [])]
    for param in params:
        args += ["--param", param]
    run(*args, cwd=root)
    state = root / f"{scheme}-state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in state.iterdir())
    assert not (root / f"{scheme}-release" / "state.json").exists()
    return root / f"{scheme}-release", state


@pytest.mark.parametrize("scheme", ["plain", "obfuscation", "fesf"])
def test_view_schemes_by_role_equal_the_bench(room, scheme):
    params, kind = CASES[scheme]
    root = room["root"]
    release, state = _protect(room, scheme, kind, params)
    # processor: the release only
    run("train", "--data", release.name, "--out", f"{scheme}.pt", "--budget", "smoke",
        "--quiet", cwd=root)
    run("predict", "--model", f"{scheme}.pt", "--data", release.name, "--split", "test",
        "--out", f"{scheme}-results", cwd=root)
    _assert_nothing_leaks(room, state, release, root / f"{scheme}.pt", root / f"{scheme}-results")
    # owner
    decoded = run("decode", "--key", "owner.key", "--state", state.name, "--results",
                  f"{scheme}-results", "--out", f"{scheme}.csv", *room["sources"][kind], cwd=root)
    figures = _metrics(decoded)
    for name, value in bench_row(room, scheme)["utility"].items():
        assert figures[name] == pytest.approx(value, abs=1e-6), name
    assert len((root / f"{scheme}.csv").read_text().splitlines()) == 33


def test_primis_key_holder_recovers_trains_and_equals_the_bench(room):
    params, kind = CASES["primis"]
    root = room["root"]
    release, state = _protect(room, "primis", kind, params)
    # the processor has nothing to train on codes: a clear error, exit 2
    refused = subprocess.run([*MEDVEIL, "train", "--data", release.name, "--out", "x.pt"],
                             capture_output=True, text=True, cwd=root)
    assert refused.returncode == 2 and "recover" in refused.stderr
    _assert_nothing_leaks(room, state, release)
    # the key holder: recover with key and state, then the standard task on the images
    run("recover", "--key", "owner.key", "--state", state.name, "--data", release.name,
        "--out", "primis-recovered.npz", cwd=root)
    assert stat.S_IMODE((root / "primis-recovered.npz").stat().st_mode) == 0o600
    run("train", "--data", "primis-recovered.npz", "--out", "primis.pt", "--budget", "smoke",
        "--quiet", cwd=root)
    run("predict", "--model", "primis.pt", "--data", "primis-recovered.npz", "--out",
        "primis-results", cwd=root)
    decoded = run("decode", "--key", "owner.key", "--state", state.name, "--results",
                  "primis-results", "--out", "primis.csv", *room["sources"][kind], cwd=root)
    figures = _metrics(decoded)
    for name, value in bench_row(room, "primis")["utility"].items():
        assert figures[name] == pytest.approx(value, abs=1e-6), name


def test_ckks_encrypted_model_by_role(room):
    params, kind = CASES["ckks"]
    root = room["root"]
    release, state = _protect(room, "ckks", kind, params)
    assert {p.name for p in release.iterdir()} >= {"ckks_model_weights.npy",
                                                    "ckks_galois_keys.npy", "test.view.npy"}
    assert not (release / "ckks_he_model.npy").exists()
    # processor: no model file, the release carries the encrypted model
    run("predict", "--data", release.name, "--out", "ckks-results", cwd=root)
    _assert_nothing_leaks(room, state, release, root / "ckks-results")
    decoded = run("decode", "--key", "owner.key", "--state", state.name, "--results",
                  "ckks-results", "--out", "ckks.csv", *room["sources"][kind], cwd=root)
    figures = _metrics(decoded)
    row = bench_row(room, "ckks")
    # CKKS is approximate and its encryption random: logits agree to ~1e-3, not 1e-6
    for name, value in row["utility"].items():
        assert figures[name] == pytest.approx(value, abs=0.02), name
    # agreement with the plaintext HE model
    from medveil.he.model import HEModel
    from medveil.owner_state import load_owner_state

    model: HEModel = load_owner_state(state).model
    images = load_dataset(root / "cxr.npz").split("test").images
    reference = model.net.forward(model.check_images(images)).argmax(1)
    lines = (root / "ckks.csv").read_text().splitlines()[1:]
    predicted = np.array([int(line.rsplit(",", 1)[1]) for line in lines])
    assert np.mean(predicted == reference) >= 0.995
    # a wrong key cannot decode (the library call the command makes)
    from medveil.errors import KeyMismatchError
    from medveil.keys import Key
    from medveil.workflow import decode_results

    with pytest.raises(KeyMismatchError, match="key"):
        decode_results(root / "ckks-results", key=Key.generate(), state=state,
                       out=root / "x.csv")
    assert not (root / "x.csv").exists()


def test_privacy_sf_encoded_segmentation_by_role(room):
    params, kind = CASES["privacy_sf"]
    root = room["root"]
    release, state = _protect(room, "privacy_sf", kind, params)
    assert not (release / "test.masks.npy").exists()  # test masks stay with the owner
    run("train", "--data", release.name, "--out", "psf.pt", "--budget", "smoke", "--quiet",
        cwd=root)
    run("predict", "--model", "psf.pt", "--data", release.name, "--out", "psf-results",
        cwd=root)
    _assert_nothing_leaks(room, state, release, root / "psf.pt", root / "psf-results")
    decoded = run("decode", "--key", "owner.key", "--state", state.name, "--results",
                  "psf-results", "--out", "psf-masks", *room["sources"][kind], cwd=root)
    figures = _metrics(decoded)
    for name, value in bench_row(room, "privacy_sf")["utility"].items():
        assert figures[name] == pytest.approx(value, abs=1e-6), name
    masks = sorted((root / "psf-masks").glob("mask_*.png"))
    assert len(masks) == len(load_dataset("chase-demo", size=64).split("test"))


def test_two_centres_pool_one_mapping_and_each_decodes_its_own(room):
    """privacy_sf across two centres as separate processes: each protects with its own key,
    the processor trains one mapping network on both releases, each centre decodes its
    own results with its own key and state, and not the other's."""
    from medveil.errors import IntegrityError, KeyMismatchError
    from medveil.keys import Key
    from medveil.multicentre import split_into_centres
    from medveil.workflow import decode_results

    params, _ = CASES["privacy_sf"]
    root = room["root"]
    parts = split_into_centres(load_dataset("chase-demo", size=64, seed=0), 2, seed=0)
    for index, part in enumerate(parts):
        arrays = {}
        for split in part.split_names:
            piece = part.split(split)
            arrays[f"{split}_images"] = piece.images
            arrays[f"{split}_masks"] = piece.masks
        np.savez(root / f"centre{index}.npz", **arrays)
        Key.generate().save(root / f"centre{index}.key")
        args = ["protect", "--scheme", "privacy_sf", "--key", f"centre{index}.key", "--data",
                f"centre{index}.npz", "--out", f"c{index}-release", "--state", f"c{index}-state",
                "--budget", "smoke", "--seed", str(index)]
        for param in params:
            args += ["--param", param]
        run(*args, cwd=root)
    run("train", "--data", "c0-release", "--data", "c1-release", "--out", "pooled.pt",
        "--budget", "smoke", "--quiet", cwd=root)
    for index in range(2):
        run("predict", "--model", "pooled.pt", "--data", f"c{index}-release", "--out",
            f"c{index}-results", cwd=root)
        decoded = run("decode", "--key", f"centre{index}.key", "--state", f"c{index}-state",
                      "--results", f"c{index}-results", "--out", f"c{index}-masks",
                      "--data", f"centre{index}.npz", cwd=root)
        assert 0.0 <= _metrics(decoded)["dice"] <= 1.0
    with pytest.raises((KeyMismatchError, IntegrityError)):  # not centre 0's results
        decode_results(root / "c1-results", key=Key.load(root / "centre0.key"),
                       state=root / "c0-state", out=root / "x")
    assert not (root / "x").exists()


@pytest.mark.slow
def test_primis_recover_on_the_demo_test_split_at_the_defaults(tmp_path):
    """The key holder's recovery at the scheme's defaults: SSIM >= 0.95 on cxr-demo's test
    split; another key is refused with a clear error."""
    from medveil.metrics import image_similarity

    run("keygen", "owner.key", cwd=tmp_path)
    run("keygen", "other.key", cwd=tmp_path)
    run("protect", "--scheme", "primis", "--key", "owner.key", "--data", "cxr-demo", "--out",
        "release", "--state", "state", cwd=tmp_path)
    run("recover", "--key", "owner.key", "--state", "state", "--data", "release", "--out",
        "recovered.npz", cwd=tmp_path)
    original = load_dataset("cxr-demo", seed=0).split("test").images
    recovered = load_dataset(tmp_path / "recovered.npz").split("test").images
    assert image_similarity(original, recovered)["ssim"] >= 0.95
    refused = subprocess.run([*MEDVEIL, "recover", "--key", "other.key", "--state", "state",
                              "--data", "release", "--out", "x.npz"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "wrong key" in refused.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_multicentre_command_writes_the_table_at_the_quick_budget(tmp_path):
    run("multicentre", "--data", "chase-demo", "--centres", "2", "--budget", "quick", "--out",
        "mc", cwd=tmp_path)
    table = (tmp_path / "mc" / "multicentre.md").read_text()
    assert "dice pooled" in table and table.count("\n| ") >= 3
    record = json.loads((tmp_path / "mc" / "multicentre.json").read_text())
    assert len(record["rows"]) == 2 and record["budget"] == "quick"


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["plain", "obfuscation"])
def test_the_quick_workflow_on_cxr_demo_equals_the_quick_bench_row(tmp_path, scheme):
    """The full-size equality: `medveil bench --quick` and the workflow at `--budget quick`
    on the bundled chest X-rays, the scheme's default parameters."""
    seeded_key("victim", 0).save(tmp_path / "owner.key")
    run("bench", "--quick", "--schemes", scheme, "--out", "bench", "--quiet", cwd=tmp_path)
    card = json.loads((tmp_path / "bench" / "scorecard.json").read_text())
    row = {r["scheme"]: r for r in card["results"]}[scheme]
    run("protect", "--scheme", scheme, "--key", "owner.key", "--data", "cxr-demo", "--out",
        "release", "--state", "state", "--budget", "quick", cwd=tmp_path)
    run("train", "--data", "release", "--out", "m.pt", "--budget", "quick", "--quiet",
        cwd=tmp_path)
    run("predict", "--model", "m.pt", "--data", "release", "--out", "results", cwd=tmp_path)
    figures = _metrics(run("decode", "--key", "owner.key", "--state", "state", "--results",
                           "results", "--out", "p.csv", "--data", "cxr-demo", cwd=tmp_path))
    for name, value in row["utility"].items():
        assert figures[name] == pytest.approx(value, abs=1e-6), name
