"""Bench mechanics on a tiny budget: failing rows, scheme order, bad names."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from medveil.attacks import AttackBudget
from medveil.attacks.inversion import InversionBudget
from medveil.attacks.reidentify import ReidBudget
from medveil.bench import parse_schemes, run_bench
from medveil.budgets import BenchBudget, get_budget
from medveil.errors import ConfigError, UnknownNameError
from medveil.schemes import SCHEMES, Scheme, register
from medveil.tasks import ClassifierConfig, SegmenterConfig

TINY = BenchBudget("quick", ClassifierConfig(epochs=1, width=8),
                   SegmenterConfig(steps=2, patch=64, batch_size=2, channels=(8, 16, 32),
                                   num_res_units=1, eval_every=2),
                   AttackBudget(inversion=InversionBudget(steps=3, batch_size=8,
                                                          channels=(8, 16, 32)),
                                reid=ReidBudget(steps=3, batch_size=8), gallery=20,
                                shadow_images=40, leak_sizes=(4, 12), distractors=16,
                                third_party_victims=16),
                   max_train=60, max_test=30)


@pytest.fixture()
def exploding():
    class Exploding(Scheme):
        name = "exploding_test_only"
        reference_only = True

        def _protect(self, images, *, key):
            raise RuntimeError("boom")

    register(Exploding)
    yield "exploding_test_only"
    SCHEMES.pop("exploding_test_only")


def test_a_failing_scheme_is_an_error_row_and_the_others_survive(tmp_path, exploding):
    card = run_bench(schemes=f"{exploding},plain", out=tmp_path, progress=False, budget=TINY)
    assert [r["scheme"] for r in card["results"]] == ["plain", exploding]
    plain, failed = card["results"]
    assert plain["status"] == "ok" and plain["utility"]["auc"] >= 0
    assert failed["status"] == "error" and "boom" in failed["error"]
    assert "boom" in (tmp_path / "errors.log").read_text()
    assert json.loads((tmp_path / "scorecard.json").read_text())["results"][1]["status"] == "error"


def test_segmentation_bench_runs(tmp_path):
    card = run_bench(data="chase-demo", schemes="plain", out=tmp_path, progress=False,
                     budget=TINY, read_options={"size": 64})
    row = card["results"][0]
    assert card["dataset"]["task"] == "segmentation" and set(row["utility"]) == {"dice", "iou"}
    assert np.isfinite(row["attacks"]["known_plaintext"]["ssim"])
    # the annotated-structure figure: a plain view shows all the plaintext shows
    structure = row["attacks"]["visual"]["structure"]
    assert structure["advantage"] == pytest.approx(1.0)
    assert structure["floor_auc"] < structure["auc"] == structure["plaintext_auc"]
    assert row["verdicts"]["views_only"]["structure_advantage"] == pytest.approx(1.0)
    from medveil.bench import SCHEMA_FILE

    jsonschema.validate(card, json.loads(SCHEMA_FILE.read_text()))


def test_scheme_list_parsing():
    specs = parse_schemes("intensity_lut,plain,intensity_lut:levels=16")
    assert [s.label for s in specs] == ["plain", "intensity_lut", "intensity_lut:levels=16"]
    assert specs[2].create().params == {"levels": 16}
    assert parse_schemes("all")[0].label == "plain"
    with pytest.raises(UnknownNameError, match="Did you mean 'plain'"):
        parse_schemes("plainn")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_schemes("intensity_lut:levels")


def test_quick_rows_take_the_schemes_quick_params_unless_named():
    (spec,) = [s for s in parse_schemes("privacy_sf:steps=7") if s.name == "privacy_sf"]
    quick, full = spec.create(budget=get_budget("quick")).params, spec.create().params
    assert quick["steps"] == full["steps"] == 7  # the row's own value wins
    assert quick["map_steps"] == SCHEMES["privacy_sf"].cut_params["quick"]["map_steps"]
    assert full["map_steps"] > quick["map_steps"]
    (plain,) = [s for s in parse_schemes("plain") if s.name == "plain"]
    assert plain.create(budget=get_budget("quick")).params == plain.create().params


def test_demo_budget_cuts_every_fitted_scheme_and_its_report_says_so(tmp_path):
    """make demo's budget: each scheme's own ``demo`` cut, and a report that names the
    budget and says its figures are not to quote."""
    from dataclasses import replace

    demo = get_budget("demo")
    for name, cls in SCHEMES.items():
        if cls.needs_fit and "demo" in cls.cut_params:
            cut = demo.scheme_params(cls)
            assert cut and all(cls(**cut).params[k] == v for k, v in cut.items()), name
    for name in ("primis", "privacy_sf", "fesf", "obfuscation"):
        assert SCHEMES[name].cut_params["demo"], name
    card = run_bench(schemes="plain", out=tmp_path, progress=False,
                     budget=replace(TINY, mode="demo"))
    assert card["mode"] == "demo"
    report = (tmp_path / "report.md").read_text()
    assert "Budget `demo`" in report and "do not quote" in report


def test_ckks_row_reports_encrypted_inference_and_no_image_attacks(tmp_path):
    card = run_bench(schemes="ckks:epochs=1", out=tmp_path, progress=False, budget=TINY,
                     read_options={"size": 28})
    row = card["results"][1]
    assert row["status"] == "ok", row["error"]
    assert "128-bit" in row["attacks"]["not_applicable"]
    assert row["attacks"]["known_plaintext"] is None and row["attacks"]["reidentify"] is None
    he = row["protocol_section"]  # the encrypted_inference protocol's own figures
    assert he["argmax_agreement"] >= 0.95 and he["max_abs_logit_error"] < 1e-2
    assert he["security"]["meets_128_bit"]
    assert row["recovery"]["ssim"] > 0.99 and row["wrong_key"]["ssim"] < 0.3
    assert row["cost"]["view_bytes_per_image"] > 100_000
    assert {"fit", "protect", "predict", "decode", "recover"} <= set(row["timing"])
    assert [(m["sender"], m["kind"]) for m in row["messages"]] == [("owner", "release"),
                                                                   ("processor", "results")]
    assert "ckks" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "scorecard.partial.json").exists()


def test_primis_row_on_segmentation_has_recovery_texture_and_code_attacks(tmp_path):
    from medveil.bench import validate_scorecard

    card = run_bench(data="chase-demo", schemes="primis:epochs=1:max_tiles=2048:min_steps=0",
                     out=tmp_path, progress=False, budget=TINY, read_options={"size": 64})
    validate_scorecard(card)
    row = card["results"][1]
    assert row["status"] == "ok", row.get("error")
    assert set(row["utility"]) == {"dice", "iou"}  # the U-Net ran on recovered images
    assert row["recovery"]["ssim"] > row["wrong_key"]["ssim"]
    assert set(row["protocol_section"]["texture"]) == {"contrast", "homogeneity", "energy",
                                                       "correlation"}
    assert [m["kind"] for m in row["messages"]] == ["release"]  # nothing comes back
    assert "magnitude_support" in row["attacks"]
    # the per-tile inverter is a candidate of the shared inverter, on record beside it
    assert "tiles" in row["attacks"]["known_plaintext"]["by_method"]
    assert row["verdicts"]["views_only"]["level"] == "not measured"  # codes: no picture
    assert "GLCM texture" in (tmp_path / "report.md").read_text()


def test_resume_keeps_finished_rows_and_refuses_another_run(tmp_path, exploding):
    first = run_bench(schemes=f"plain,{exploding}", out=tmp_path, progress=False, budget=TINY)
    # an interrupted run leaves its rows behind; simulate one that stopped after plain
    partial = json.loads((tmp_path / "scorecard.json").read_text())
    from medveil.bench import run_header, subsample_for_budget
    from medveil.data import load_dataset

    header = run_header(subsample_for_budget(load_dataset("cxr-demo", seed=0), TINY, 0), TINY, 0)
    (tmp_path / "scorecard.partial.json").write_text(
        json.dumps({**header, "results": [partial["results"][0]]}))
    again = run_bench(schemes=f"plain,{exploding}", out=tmp_path, progress=False, budget=TINY,
                      resume=True)
    plain = again["results"][0]
    assert plain["resumed"] and plain["utility"] == first["results"][0]["utility"]
    assert again["results"][1]["status"] == "error"  # not finished before: run again
    assert "--resume" in (tmp_path / "report.md").read_text()
    # a partial file from another seed is refused, not mixed in
    (tmp_path / "scorecard.partial.json").write_text(
        json.dumps({**header, "seed": 7, "results": [partial["results"][0]]}))
    with pytest.raises(ConfigError, match="different run"):
        run_bench(schemes="plain", out=tmp_path, progress=False, budget=TINY, resume=True)


def test_privacy_sf_row_segments_encoded_data_and_is_attacked(tmp_path):
    from medveil.bench import validate_scorecard

    card = run_bench(data="chase-demo", schemes="privacy_sf:steps=5:map_steps=5:crop=32",
                     out=tmp_path, progress=False, budget=TINY, read_options={"size": 64})
    validate_scorecard(card)
    row = card["results"][1]
    assert row["status"] == "ok", row.get("error")
    assert set(row["utility"]) == {"dice", "iou"}
    assert set(row["protocol_section"]["wrong_key_masks"]) == {"dice", "iou"}
    attacks = row["attacks"]
    assert attacks["visual"] is not None  # the token grid as a reader would show it
    assert {"known_plaintext", "shadow_key", "reidentify", "leak_curve", "third_parties"} <= set(
        attacks)
    assert "tokens" in attacks["known_plaintext"]["by_method"]
    assert [point["pairs"] for point in attacks["leak_curve"]] == [4, 5]  # capped by train
    assert set(row["verdicts"]) == {"views_only", "shadow_key", "leaked_pairs", "membership"}
    assert row["cost"]["view_bytes_per_image"] == 64 * 32 * 4
    # this cut of CHASE leaves too few validation images to serve as non-members: the
    # row and the verdict say so (the mapping network's target: test_membership_targets)
    assert "validation images" in row["membership"]["not_measured"]
    assert row["verdicts"]["membership"]["level"] == "not measured"
    assert set(row["utility_intervals"]) == {"dice", "iou"}
    assert row["vs_plain"]["dice"]["method"] == "paired-bootstrap"


def test_report_says_a_view_shows_the_fine_structure_that_identifies_its_patient():
    from medveil.report import _verdict

    seen = {"top1": 0.75, "chance": 1 / 28, "gallery": 28, "queries": 4,
            "method": "fine_structure", "top1_ci95": [0.30, 0.95]}
    row = {"status": "ok", "protocol": "view", "attacks": {"visual": {"ssim": 0.1, "psnr": 9.0,
                                                  "reidentify": seen}}}
    assert "vessels" in _verdict(row, None, "auc")
    at_chance = {**seen, "top1": 0.0, "top1_ci95": [0.0, 0.49]}
    row["attacks"]["visual"]["reidentify"] = at_chance
    assert "identifies" not in _verdict(row, None, "auc")


def test_report_says_a_view_shows_the_annotated_vessels():
    from medveil.report import _verdict

    structure = {"auc": 0.83, "floor_auc": 0.65, "plaintext_auc": 0.85, "advantage": 0.9}
    row = {"status": "ok", "protocol": "view", "attacks": {"visual": {"ssim": 0.25, "psnr": 11.0,
                                                  "structure": structure}}}
    said = _verdict(row, None, "dice")
    assert "shows the patient's annotated structure" in said and "0.830" in said
    row["attacks"]["visual"]["structure"] = {**structure, "auc": 0.66, "advantage": 0.05}
    assert "annotated structure" not in _verdict(row, None, "dice")
