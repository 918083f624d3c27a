"""The bench's content-addressed cache: a warm run reuses fits and rows, with the same
figures; any change of the inputs misses; the shadow attacker never reads the owner's."""

from __future__ import annotations

import json
import stat

import pytest

from medveil.attacks.suite import seeded_key
from medveil.bench import run_bench
from medveil.errors import ConfigError
from tests.unit.test_bench_rows import TINY
from tests.unit.test_executors import figures

SCHEMES = "plain,obfuscation:epochs=1"


def cached(card: dict) -> dict[str, list[str]]:
    return {row["scheme"]: row["cached"] for row in card["results"]}


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    cache = root / "cache"
    cold = run_bench(schemes=SCHEMES, out=root / "cold", progress=False, budget=TINY,
                     cache=cache)
    warm = run_bench(schemes=SCHEMES, out=root / "warm", progress=False, budget=TINY,
                     cache=cache)
    return root, cache, cold, warm


def test_a_warm_run_reuses_every_cached_stage_with_the_same_figures(cold_and_warm):
    root, _, cold, warm = cold_and_warm
    assert "Reused from the bench cache" not in (root / "cold" / "report.md").read_text()
    assert ("plain (row); obfuscation:epochs=1 (fit, shadow_fit)"
            in (root / "warm" / "report.md").read_text())
    assert cached(cold) == {"plain": [], "obfuscation:epochs=1": []}
    assert cached(warm) == {"plain": ["row"], "obfuscation:epochs=1": ["fit", "shadow_fit"]}
    strip = {"cached"}
    assert ({k: v for k, v in figures(warm).items() if k != "results"}
            == {k: v for k, v in figures(cold).items() if k != "results"})
    for before, after in zip(cold["results"], warm["results"], strict=True):
        assert ({k: v for k, v in figures(after).items() if k not in strip}
                == {k: v for k, v in figures(before).items() if k not in strip})
    plain, obfuscation = warm["results"]
    assert list(plain["timing"]) == ["row_from_cache"]
    assert obfuscation["timing"]["fit"] < cold["results"][1]["timing"]["fit"]


def test_the_cache_is_private_and_the_shadow_fit_is_the_attackers_own(cold_and_warm):
    _, cache, _, _ = cold_and_warm
    for path in [cache, *cache.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    owner = {p.name for p in (cache / "owner_fit").iterdir()}
    shadow = {p.name for p in (cache / "shadow_fit").iterdir()}
    assert len(owner) == len(shadow) == 1 and not owner & shadow
    (entry,) = (cache / "shadow_fit").iterdir()
    fingerprint = json.loads((entry / "state.json").read_text())["state"]["key_fingerprint"]
    assert fingerprint == seeded_key("attacker", 0).fingerprint
    assert fingerprint != seeded_key("victim", 0).fingerprint


def test_any_change_of_the_inputs_misses(cold_and_warm, tmp_path, monkeypatch):
    _, cache, _, _ = cold_and_warm
    other_param = run_bench(schemes="plain,obfuscation:epochs=2", out=tmp_path / "p",
                            progress=False, budget=TINY, cache=cache)
    assert cached(other_param) == {"plain": ["row"], "obfuscation:epochs=2": []}
    other_seed = run_bench(schemes="plain", out=tmp_path / "s", progress=False, budget=TINY,
                           seed=1, cache=cache)
    assert cached(other_seed) == {"plain": []}
    other_data = run_bench(schemes="plain", out=tmp_path / "d", progress=False, budget=TINY,
                           read_options={"size": 32}, cache=cache)
    assert cached(other_data) == {"plain": []}
    monkeypatch.setattr("medveil.cache.code_digest", lambda: "another version of the code")
    other_code = run_bench(schemes="plain", out=tmp_path / "c", progress=False, budget=TINY,
                           cache=cache)
    assert cached(other_code) == {"plain": []}


def test_a_damaged_entry_is_fitted_again_and_replaced(tmp_path):
    cache = tmp_path / "cache"
    first = run_bench(schemes="obfuscation:epochs=1", out=tmp_path / "a", progress=False,
                      budget=TINY, cache=cache)
    (entry,) = (cache / "owner_fit").iterdir()
    (entry / "arrays.npz").write_bytes(b"not an archive")
    again = run_bench(schemes="obfuscation:epochs=1", out=tmp_path / "b", progress=False,
                      budget=TINY, cache=cache)
    assert cached(again)["obfuscation:epochs=1"] == ["shadow_fit"]  # the owner's: refitted
    assert again["results"][1]["utility"] == first["results"][1]["utility"]
    assert (entry / "arrays.npz").read_bytes()[:2] == b"PK"  # replaced by a good entry


def test_a_file_as_cache_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ConfigError, match="--cache"):
        run_bench(schemes="plain", out=tmp_path / "out", progress=False, budget=TINY,
                  cache=tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"
