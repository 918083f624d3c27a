"""`medveil bench` on the bundled chest X-rays: contract, calibration, report.

The default suite runs the `smoke` budget (minutes matter: the suite must stay
under 10); the same checks at the `quick` budget are `slow`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from medveil.bench import SCHEMA_FILE, SCORECARD_SCHEMA
from tests.conftest import SHARED_DATA

SCHEMES = "plain,block_scramble,intensity_lut"


@pytest.fixture(scope="module", params=["smoke", pytest.param("quick", marks=pytest.mark.slow)])
def bench_out(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run([sys.executable, "-m", "medveil.cli", "bench", "--budget",
                             request.param, "--schemes", SCHEMES, "--out", str(out), "--quiet"],
                            capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return out, result


def rows(out: Path) -> dict[str, dict]:
    card = json.loads((out / "scorecard.json").read_text())
    return {row["scheme"]: row for row in card["results"]}


def test_scorecard_validates_against_the_schema(bench_out):
    out, _ = bench_out
    card = json.loads((out / "scorecard.json").read_text())
    jsonschema.validate(card, json.loads(SCHEMA_FILE.read_text()))
    assert card["mode"] in ("smoke", "quick") and card["dataset"]["task"] == "classification"
    assert [r["scheme"] for r in card["results"]] == ["plain", "block_scramble", "intensity_lut"]
    assert all(r["status"] == "ok" for r in card["results"])


def test_every_row_carries_intervals_membership_and_its_difference_to_plain(bench_out):
    """Scorecard /9: utility with its intervals, the paired difference to plain, the
    membership attacks on the row's model, and the thread count it ran with."""
    out, _ = bench_out
    for name, row in rows(out).items():
        for metric in ("auc", "accuracy", "f1", "mcc"):
            interval = row["utility_intervals"][metric]
            assert interval["low"] - 1e-6 <= row["utility"][metric] <= interval["high"] + 1e-6, \
                (name, metric)
            assert abs(interval["estimate"] - row["utility"][metric]) < 1e-6
        assert row["utility_intervals"]["auc"]["method"] == "delong"
        assert row["threads"] >= 1
        membership = row["membership"]
        assert membership["domain"] == "views" and membership["references"] == 2
        for attack in ("loss", "rmia"):
            assert 0 <= membership[attack]["auc"] <= 1
        assert row["verdicts"]["membership"]["level"] in (
            "leaks membership", "no measurable leak", "not measured")
        if name == "plain":
            assert "vs_plain" not in row
        else:
            difference = row["vs_plain"]["auc"]
            assert difference["method"] == "delong-paired" and 0 <= difference["p_value"] <= 1


def test_the_report_quotes_intervals_never_a_bare_difference(bench_out):
    """'Which scheme' and the per-scheme text say whether a cost is measurable from the
    paired interval, and quote it."""
    out, _ = bench_out
    md = (out / "report.md").read_text()
    which = md.split("## Which scheme", 1)[1].split("## Per scheme", 1)[0]
    card = {r["scheme"]: r for r in json.loads((out / "scorecard.json").read_text())["results"]}
    for name in ("block_scramble", "intensity_lut"):
        difference = card[name]["vs_plain"]["auc"]
        quoted = f"{difference['estimate']:+.3f} [{difference['low']:+.3f}, " \
                 f"{difference['high']:+.3f}]"
        assert quoted in which, (name, which)
        section = md.split(f"### {name}", 1)[1].split("###", 1)[0]
        assert quoted in section and ("no measurable AUC cost" in section
                                      or "costs AUC" in section
                                      or "better than plain on AUC" in section)
        assert "against plain)" not in section.replace("(paired on the same test images "
                                                       "against plain)", "")
    assert "within 0.05" not in which
    assert "the model: queries the trained model" in md


def test_every_row_times_its_stages(bench_out):
    """Scorecard /6: where a row's time goes, stage by stage, adding up to most of it."""
    out, _ = bench_out
    for name, row in rows(out).items():
        timing = row["timing"]
        for stage in ("fit", "protect", "task_training", "predict", "visual", "shadow_key"):
            assert stage in timing, (name, stage)
        assert any(s.startswith("known_plaintext_k") for s in timing)
        assert any(s.startswith("reidentify_k") for s in timing)
        assert all(seconds >= 0 for seconds in timing.values())
        assert 0.5 * row["wall_s"] <= sum(timing.values()) <= row["wall_s"] + 1e-6, name


def test_shipped_schema_extends_the_design_contract_under_a_new_version():
    """The shipped schema is the contract; a change bumps its version and keeps every
    field the design's first version required."""
    design = SHARED_DATA.parent / "design" / "scorecard.schema.json"
    if not design.exists():
        pytest.skip("../shared/design is not here")
    first, shipped = json.loads(design.read_text()), json.loads(SCHEMA_FILE.read_text())
    if first == shipped:
        return
    assert shipped["$id"] != first["$id"] and shipped["$id"] == SCORECARD_SCHEMA
    assert set(first["required"]) <= set(shipped["required"])
    row_first = first["properties"]["results"]["items"]
    row_shipped = shipped["properties"]["results"]["items"]
    assert set(row_first["required"]) <= set(row_shipped["required"])
    assert set(row_first["properties"]) <= set(row_shipped["properties"])


def test_calibration_the_attacks_break_the_weak_schemes(bench_out):
    out, _ = bench_out
    r = rows(out)
    assert r["plain"]["attacks"]["known_plaintext"]["ssim"] >= 0.95
    assert r["plain"]["attacks"]["reidentify"]["top1"] >= 0.95
    assert r["intensity_lut"]["attacks"]["known_plaintext"]["ssim"] >= 0.8
    # the victims' key holders recover exactly; a wrong key gives nothing like the images
    for name in ("block_scramble", "intensity_lut"):
        assert r[name]["recovery"]["ssim"] > 0.99
        assert r[name]["wrong_key"]["ssim"] < 0.5
        assert r[name]["attacks"]["visual"]["ssim"] < 0.3
    # the shadow attacker's own key does not open the victim's views of a bijective LUT
    assert r["intensity_lut"]["attacks"]["shadow_key"]["ssim"] < 0.5
    # the verdicts: broken for the attacker with leaked pairs, by its advantage
    for name in ("plain", "intensity_lut", "block_scramble"):
        verdict = r[name]["verdicts"]["leaked_pairs"]
        assert verdict["level"] == "broken" and verdict["advantage"] >= 0.8, name
    assert r["block_scramble"]["attacks"]["known_plaintext"]["method"] == "correspondence"
    assert r["plain"]["verdicts"]["views_only"]["level"] == "broken"
    for name in ("block_scramble", "intensity_lut"):  # the view alone shows no anatomy
        assert r[name]["attacks"]["visual"]["advantage"] < 0.2
    if json.loads((out / "scorecard.json").read_text())["mode"] == "quick":
        assert r["plain"]["utility"]["auc"] > 0.75  # the smoke budget trains 2 epochs


def test_report_is_self_contained_and_names_its_pictures(bench_out):
    out, result = bench_out
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html
    assert not re.search(r'src="(?!data:)', html)  # opens from disk, no server, no files
    md = (out / "report.md").read_text()
    for name in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "privacy_utility.png" in md and "grid_intensity_lut.png" in md
    assert "leak_curve.png" in md and "## Verdicts by attacker" in md
    assert "intensity_lut" in result.stdout and "report.html" in result.stdout


def test_the_report_says_when_it_holds_patient_images(bench_out, tmp_path):
    """With pictures the report says so at its top; without (`--no-pictures`) it holds no
    grid of patient images, also none left by a former run in the same folder."""
    import shutil

    from medveil.report import NO_PATIENT_NOTICE, PATIENT_NOTICE, write_report

    out, _ = bench_out
    assert PATIENT_NOTICE in " ".join((out / "report.md").read_text().split()[:80])
    copy = Path(shutil.copytree(out, tmp_path / "again"))
    card = json.loads((copy / "scorecard.json").read_text())
    write_report(copy, card, {row["scheme"]: None for row in card["results"]})
    md, html = (copy / "report.md").read_text(), (copy / "report.html").read_text()
    assert NO_PATIENT_NOTICE in md and not list(copy.glob("grid_*.png"))
    assert html.count("data:image/png;base64,") == 2  # the two plots only


def test_a_sweep_on_local_workers_with_a_cache_from_the_command_line(tmp_path):
    """As a user runs it: two seeds on two worker processes, then again from the cache."""
    def sweep(out: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "medveil.cli", "bench", "--budget", "smoke", "--schemes",
             "plain", "--seeds", "0,1", "--executor", "processes", "--workers", "2",
             "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / out), "--quiet"],
            capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})

    first = sweep("cold")
    assert first.returncode == 0, first.stderr
    index = json.loads((tmp_path / "cold" / "sweep.json").read_text())["sweep"]
    assert [entry["seed"] for entry in index] == [0, 1]
    cold = [json.loads((tmp_path / "cold" / e["folder"] / "scorecard.json").read_text())
            for e in index]
    assert {c["machine"]["executor"]["name"] for c in cold} == {"processes"}
    assert [c["results"][0]["cached"] for c in cold] == [[], []]
    again = sweep("warm")
    assert again.returncode == 0, again.stderr
    warm = [json.loads((tmp_path / "warm" / e["folder"] / "scorecard.json").read_text())
            for e in index]
    assert [c["results"][0]["cached"] for c in warm] == [["row"], ["row"]]
    assert [c["results"][0]["utility"] for c in warm] == [c["results"][0]["utility"]
                                                         for c in cold]
    assert "one folder per data set and seed" in again.stdout
    summary = json.loads((tmp_path / "cold" / "summary.json").read_text())
    (block,) = summary["datasets"]
    (plain,) = block["rows"]
    assert block["seeds"] == [0, 1] and plain["seeds"] == [0, 1]
    auc = plain["figures"]["utility.auc"]
    assert auc["per_seed"] == [c["results"][0]["utility"]["auc"] for c in cold]
    assert auc["min"] <= auc["mean"] <= auc["max"] and auc["n"] == 2
    assert "membership.loss.auc" in plain["figures"]
    assert "| plain |" in (tmp_path / "cold" / "summary.md").read_text()
