"""Attack building blocks on real chest X-ray crops."""

from __future__ import annotations

import numpy as np
import pytest

from medveil.attacks.correspondence import fit_correspondence
from medveil.attacks.inversion import (
    InversionBudget,
    SpanProjection,
    invert,
    train_inverter,
)
from medveil.attacks.reidentify import topk
from medveil.attacks.suite import seeded_key, visual
from medveil.metrics import image_similarity
from medveil.schemes import create


@pytest.fixture(scope="module")
def crops(cxr):
    images = np.ascontiguousarray(cxr.split("train").images[:120, :, 16:48, 16:48])
    return images[:100], images[100:]


def test_correspondence_inverts_block_scrambling_exactly(crops):
    train, held_out = crops
    key = seeded_key("victim", 0)
    scheme = create("block_scramble").fit(None, key=key)
    inverter = fit_correspondence(scheme.protect(train, key=key), train)
    recon = inverter.invert(scheme.protect(held_out, key=key))
    assert image_similarity(held_out, recon)["ssim"] > 0.99


def test_inverter_learns_an_intensity_table_from_few_pairs(crops):
    train, held_out = crops
    key = seeded_key("victim", 1)
    scheme = create("intensity_lut")
    net = train_inverter(scheme.protect(train[:40], key=key), train[:40],
                         budget=InversionBudget(steps=30, batch_size=8, channels=(8, 16, 32)),
                         seed=0)
    recon = invert(net, scheme.protect(held_out, key=key))
    assert image_similarity(held_out, recon)["ssim"] > 0.9


def test_span_projection_whitens_the_training_views():
    import torch

    rng = np.random.default_rng(0)
    views = torch.from_numpy(rng.normal(size=(12, 5000)).astype(np.float32))
    projection = SpanProjection(views, max_span=512)
    assert projection.dim == 11  # n - 1 directions once centred
    coords = projection(views).double()
    np.testing.assert_allclose((coords.T @ coords / 11).numpy(), np.eye(11), atol=1e-4)
    capped = SpanProjection(views, max_span=4)
    assert capped.dim == 4


def test_long_code_views_are_inverted_through_their_span(crops):
    train, held_out = crops
    order = np.random.default_rng(3).permutation(2 * 32 * 32)

    def code(images):  # a long, non-image-shaped view that determines the image
        flat = images.reshape(len(images), -1)
        return np.concatenate([flat, 1 - flat], axis=1)[:, order].astype(np.float32)

    budget = InversionBudget(steps=150, batch_size=16, max_dense_inputs=1024)
    net = train_inverter(code(train), train, budget=budget, seed=0)
    assert net.projection is not None and net.projection.dim <= len(train)
    recon = invert(net, code(held_out))
    chance = image_similarity(held_out, np.repeat(train.mean(0, keepdims=True), len(held_out), 0))
    assert image_similarity(held_out, recon)["ssim"] > chance["ssim"] + 0.1


def test_visual_and_topk():
    images = np.zeros((3, 1, 8, 8), np.float32)
    assert visual(np.zeros((3, 4), np.int8), images).figures is None  # code views: n/a
    similarity = np.array([[1.0, 0.0, 0.5], [0.9, 0.1, 0.0], [0.0, 0.2, 0.8]])
    top1, top5 = topk(similarity)
    assert top1 == pytest.approx(2 / 3) and top5 == 1.0


def test_the_invariant_visual_figure_sees_an_inverted_rescaled_copy(cxr):
    """A contrast-inverted, rescaled copy of real images shows the same anatomy: raw SSIM
    misses it, the affine-invariant figure finds it far above the mean-image floor."""
    from medveil.attacks.suite import visual

    images = cxr.split("test").images[:16]
    copy = 0.8 - 0.6 * images  # inverted, compressed to [0.2, 0.8]
    figures = visual(copy, images, public=cxr.split("train").images).figures
    assert figures["ssim"] < 0.3
    assert figures["invariant"]["ssim"] > 0.95
    assert figures["advantage"] > 0.9
    assert 0.0 < figures["floor_ssim"] < 0.9
    noise = np.random.default_rng(0).random(images.shape).astype(np.float32)
    assert visual(noise, images, public=cxr.split("train").images).figures["advantage"] < 0.1


def test_every_figure_gets_its_advantage_and_re_identification_its_interval():
    from medveil.attacks.suite import with_advantages, with_interval
    from medveil.metrics import wilson_interval

    attacks = {"known_plaintext": {"ssim": 0.75, "psnr": 20.0, "pairs": 10},
               "leak_curve": [{"pairs": 10, "ssim": 0.75, "psnr": 20.0}],
               "not_applicable": None}
    with_advantages(attacks, 0.5)
    assert attacks["known_plaintext"]["advantage"] == pytest.approx(0.5)
    assert attacks["leak_curve"][0]["advantage"] == pytest.approx(0.5)
    # 2 of 8 queries in a gallery of 8: within noise of chance
    reid = with_interval({"top1": 0.25, "top5": 0.5, "chance": 0.125, "gallery": 8,
                          "queries": 8})
    low, high = reid["top1_ci95"]
    assert low < 0.125 < 0.25 < high
    assert reid["top1_over_chance"] == pytest.approx(0.125)
    # the interval is over the queries, not the gallery with its distractors
    wide = with_interval({"top1": 0.25, "top5": 0.5, "chance": 0.001, "gallery": 1000,
                          "queries": 8})
    assert wide["top1_ci95"] == reid["top1_ci95"]
    assert wilson_interval(0.5, 1000)[1] - wilson_interval(0.5, 1000)[0] < 0.07


def test_distractors_lower_chance_and_a_plain_view_is_still_found(cxr):
    """Re-identification ranks a gallery of the queries' plaintexts plus distractors the
    attacker never saw; plain views find their patient among hundreds by every method."""
    from medveil.attacks.reidentify import ReidBudget, reidentify

    test, train = cxr.split("test").images, cxr.split("train").images
    queries = test[:12]
    figures = reidentify(queries, queries, distractors=np.concatenate([test[12:], train[200:]]),
                         leaked_inverted=train[:32], leaked_plain=train[:32],
                         budget=ReidBudget(steps=5, batch_size=8), seed=0)
    assert figures["gallery"] == len(test) + len(train) - 200 and figures["queries"] == 12
    assert figures["chance"] == pytest.approx(1 / figures["gallery"])
    assert figures["top1"] == 1.0 and figures["pixel_top1"] == 1.0
    # the contrast-invariant ranking finds an inverted, rescaled copy; pixel distance need not
    inverted = reidentify(0.9 - 0.7 * queries, queries, distractors=test[12:],
                          leaked_inverted=train[:16], leaked_plain=train[:16],
                          budget=ReidBudget(steps=2, batch_size=8), seed=0)
    assert inverted["correlation_top1"] == 1.0 and inverted["top1"] == 1.0


def test_verdicts_follow_the_thresholds_and_accumulate_over_actors():
    from medveil.verdicts import actor_verdicts, judge

    def reid(top1, low, chance=0.01):
        return {"top1": top1, "chance": chance, "top1_ci95": [low, min(1.0, top1 + 0.1)],
                "top1_over_chance": top1 - chance}

    assert judge(0.05, reid(0.02, 0.0), None)[0] == "no measurable leak"
    assert judge(0.3, None, None) == ("partial", "partial: blurred anatomy")
    assert judge(0.9, reid(1.0, 0.95), None) == ("broken",
                                                 "broken: images and identities recovered")
    assert judge(0.0, reid(0.2, 0.1), None) == ("partial", "partial: some identities")
    third = {"disclosure_rate": 0.9, "chance": 0.05, "disclosure_ci95": [0.8, 0.95]}
    assert judge(0.0, None, third) == ("broken", "broken: other patients disclosed")
    attacks = {"visual": {"ssim": 0.0, "psnr": 5.0, "advantage": -0.5,
                          "reidentify": reid(0.01, 0.0)},
               "shadow_key": {"ssim": 0.1, "psnr": 9.0, "advantage": 0.05},
               "known_plaintext": {"ssim": 0.9, "psnr": 30.0, "advantage": 0.85},
               "reidentify": reid(1.0, 0.96)}
    verdicts = actor_verdicts(attacks)
    assert [verdicts[a]["level"] for a in ("views_only", "shadow_key", "leaked_pairs")] == [
        "no measurable leak", "no measurable leak", "broken"]
    assert verdicts["leaked_pairs"]["image_attack"] == "known_plaintext"
    assert actor_verdicts({"not_applicable": "ciphertexts"})["views_only"]["level"] == \
        "not applicable"
    assert judge(0.0, None, None, structure=0.5) == ("partial",
                                                     "partial: annotated structure shown")
    attacks["visual"]["structure"] = {"auc": 0.8, "floor_auc": 0.6, "plaintext_auc": 0.85,
                                      "advantage": 0.8}
    shown = actor_verdicts(attacks)["views_only"]
    assert shown["level"] == "partial" and shown["structure_advantage"] == 0.8


def test_the_structure_figure_sees_the_vessels_that_ssim_misses(chase):
    """A fundus view that is a quarter-resolution, contrast-inverted vessel map of the
    real CHASE image (what privacy_sf's views look like) scores below the mean-image
    floor on raw and affine-invariant SSIM, yet a ridge detector finds the annotated
    vessels in it almost as well as in the plaintext; noise and block-scrambled views
    show nothing beyond the guess, and the plaintext scores exactly 1."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from scipy.ndimage import gaussian_filter

    test, public = chase.split("test"), chase.split("train").images
    images, masks = test.images, test.masks
    grey = images[:, 0].astype(np.float64)
    vessels = np.stack([gaussian_filter(x, 1) - gaussian_filter(x, 4) for x in grey])[:, None]
    vessels = 1 - (vessels - vessels.min()) / (vessels.max() - vessels.min())
    coarse = F.interpolate(torch.from_numpy(vessels).float(), scale_factor=0.25, mode="area")
    view = F.interpolate(coarse, size=images.shape[-2:], mode="nearest").numpy()
    figures = visual(view, images, public=public, masks=masks).figures
    assert figures["advantage"] < 0.0  # every SSIM figure below the floor
    assert figures["structure"]["advantage"] > 0.6
    assert figures["structure"]["floor_auc"] < figures["structure"]["auc"]
    plain = visual(images, images, public=public, masks=masks).figures["structure"]
    assert plain["advantage"] == pytest.approx(1.0)
    noise = np.random.default_rng(0).random(images.shape).astype(np.float32)
    assert visual(noise, images, public=public, masks=masks).figures["structure"][
        "advantage"] < 0.1
    key = seeded_key("victim", 0)
    scheme = create("block_scramble").fit(None, key=key)
    scrambled = scheme.view_as_image(scheme.protect(images, key=key))
    assert visual(scrambled, images, public=public, masks=masks).figures["structure"][
        "advantage"] < 0.1
    assert "structure" not in visual(view, images, public=public).figures  # no masks


def test_fine_structure_finds_a_fundus_whose_picture_was_remapped():
    """Actor 1 with a gallery: a fundus view inverted, compressed, its background turned
    grey and noise added still shows the patient's vessels; the fine-structure ranking
    finds every patient among the real CHASE images (no training)."""
    from medveil.attacks.suite import visual_reidentification
    from medveil.data import load_dataset

    fundus = load_dataset("chase-demo", size=128, seed=0).images
    rng = np.random.default_rng(0)
    views = 0.8 - 0.5 * fundus + 0.4 * (fundus < 0.05) + rng.normal(0, 0.05, fundus.shape)
    views = np.clip(views, 0, 1).astype(np.float32)
    figures = visual_reidentification(views[:4], fundus[:4], fundus[4:])
    assert figures["fine_structure_top1"] == 1.0 and figures["top1"] == 1.0
    assert figures["gallery"] == len(fundus) and figures["chance"] == pytest.approx(1 / len(fundus))
