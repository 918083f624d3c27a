"""The sweep summary over seeds and the report's words for a paired difference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from medveil.comparison import utility_statement
from medveil.sweep_summary import cost_statement, numeric_leaves, summarise

differences = st.builds(
    lambda centre, half, p: {"estimate": centre, "low": centre - half, "high": centre + half,
                             "p_value": p, "method": "delong-paired"},
    st.floats(-0.5, 0.5), st.floats(0.0, 0.2), st.floats(0.0, 1.0))


@settings(max_examples=100, deadline=None)
@given(st.lists(differences | st.none(), max_size=5))
def test_a_cost_is_measurable_only_when_every_seed_says_so(found):
    said = cost_statement(found, metric="auc")
    measured = [d for d in found if d]
    assert said["seeds"] == len(measured)
    if said["verdict"] == "measurable cost":
        assert measured and all(d["high"] < 0 for d in measured)
    if said["verdict"] in ("no measurable cost", "measurably better"):
        assert all(d["high"] >= 0 for d in measured)
    if said["verdict"] == "mixed":
        assert 0 < said["seeds_cost"] < len(measured)


@settings(max_examples=100, deadline=None)
@given(differences)
def test_the_report_says_a_cost_only_where_the_interval_lies_below_zero(difference):
    said = utility_statement(difference, metric="AUC")
    assert f"{difference['estimate']:+.3f}" in said
    if difference["high"] < 0:
        assert said.startswith("costs AUC")
    elif difference["low"] > 0:
        assert said.startswith("better than plain")
    else:
        assert said.startswith("no measurable AUC cost")


def test_numeric_leaves_keep_numbers_and_drop_the_rest():
    found = numeric_leaves({"a": {"b": 1, "c": [1, 2], "d": True, "e": "x", "f": float("nan")},
                            "g": 0.5}, "root")
    assert found == {"root.a.b": 1.0, "root.g": 0.5}


def _card(seed: int, auc_plain: float, auc_other: float, high: float) -> dict:
    return {"seed": seed, "mode": "quick", "dataset": {"name": "cxr", "task": "classification"},
            "results": [
                {"scheme": "plain", "status": "ok", "utility": {"auc": auc_plain},
                 "membership": {"loss": {"auc": 0.51}, "leaks": False}},
                {"scheme": "obfuscation", "status": "ok", "utility": {"auc": auc_other},
                 "vs_plain": {"auc": {"estimate": auc_other - auc_plain, "low": -0.1,
                                      "high": high, "p_value": 0.01, "method": "d"}}}]}


def test_the_summary_gives_mean_spread_and_per_seed_values():
    summary = summarise([_card(0, 0.94, 0.90, -0.01), _card(1, 0.96, 0.93, -0.02),
                         _card(2, 0.95, 0.94, 0.01)])
    (block,) = summary["datasets"]
    plain, other = block["rows"]
    auc = plain["figures"]["utility.auc"]
    assert auc["per_seed"] == [0.94, 0.96, 0.95] and np.isclose(auc["mean"], 0.95)
    assert np.isclose(auc["sd"], np.std([0.94, 0.96, 0.95], ddof=1))
    assert plain["utility_cost"] is None and plain["membership_leaks"] == [False] * 3
    assert other["utility_cost"]["verdict"] == "mixed"
    assert other["utility_cost"]["seeds_cost"] == 2
    assert np.isclose(other["figures"]["vs_plain.auc.estimate"]["mean"],
                      np.mean([-0.04, -0.03, -0.01]))
