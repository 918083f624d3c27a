"""Membership inference: calibrated on real chest X-rays (an overfitted model is caught,
a model that never saw the candidates is not), and the attacks' arithmetic as
properties over generated scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medveil.attacks.membership import (
    MembershipTarget,
    Samples,
    classification_scorer,
    membership_attacks,
    membership_leaks,
    rmia_scores,
    tpr_at_fpr,
)
from medveil.data import load_dataset
from medveil.data.imageset import from_splits
from medveil.tasks import ClassifierConfig, predict_proba, train_classifier
from medveil.verdicts import membership_verdict
from tests.conftest import shared_path

#: the overfitted case: no augmentation, no weight decay, 100 epochs on 120 images
OVERFIT = ClassifierConfig(epochs=100, batch_size=32, augment=False, weight_decay=0.0)
#: the model trained on other data: a short standard training (cheap on 2 cores)
SHORT = ClassifierConfig(epochs=5, width=8)


@pytest.fixture(scope="module")
def breast_ultrasound():
    """BreastMNIST's 780 images (28 px, malignant vs benign), one random order: small
    and hard enough that a model fitted to 120 of them does not generalise."""
    data = load_dataset(shared_path("breastmnist_28.npz"), seed=0)
    order = np.random.default_rng(20261205).permutation(len(data))
    return data.images[order], data.labels[order]


@pytest.fixture(scope="module")
def chest_xrays():
    """The 5216 official training images of the paediatric chest X-rays, 64 px, one
    random order (every set below is drawn from this one source: no split shift)."""
    data = load_dataset(shared_path("cxr_pneumonia_64.npz"), seed=0)
    pool = data.splits_subset(("train", "val"))
    order = np.random.default_rng(20261205).permutation(len(pool))
    return pool.images[order], pool.labels[order]


def _imageset(images, labels, val_images=None, val_labels=None):
    parts = [("train", images, labels, None)]
    if val_images is not None and len(val_images):
        parts.append(("val", val_images, val_labels, None))
    return from_splits(parts, class_names=["normal", "pneumonia"],
                       meta={"name": "calibration", "reader": "memory"})


def _target(model_images, model_labels, train: Samples, val: Samples, *, seed: int,
            config: ClassifierConfig):
    """A target whose model trained on ``model_images`` (the candidates' ``train`` need
    not be those: a model that never saw them is the second case)."""
    def fit(images, labels, val_images, val_labels, fit_seed):
        model = train_classifier(_imageset(images, labels).split("train"),
                                 val=_imageset(val_images, val_labels).split("train")
                                 if len(val_images) else None,
                                 config=ClassifierConfig(**config.__dict__), seed=fit_seed)
        return classification_scorer(lambda x: predict_proba(model, x))

    score = fit(model_images, model_labels, model_images[:0], model_labels[:0], seed)
    return MembershipTarget(
        domain="plain images", threat="the test", splits={"train": train, "val": val},
        score=score,
        # the same training as the target's (which chose no checkpoint on held-out images)
        fit_reference=lambda tr, va, s: fit(tr.inputs, tr.truth, tr.inputs[:0], tr.truth[:0],
                                            s))


def test_an_overfitted_model_is_caught(breast_ultrasound):
    images, labels = breast_ultrasound
    trained_on = Samples(images[:120], labels[:120])
    outsiders = Samples(images[120:240], labels[120:240])
    target = _target(trained_on.inputs, trained_on.truth, trained_on, outsiders, seed=1,
                     config=OVERFIT)
    found = membership_attacks(target, references=2, seed=1)
    # half the training images are asked about (the other half trains the references)
    assert found["members"] == found["non_members"] == 60
    # detected: the stronger attack (the one the verdict reads) at AUC >= 0.8, and both
    # above chance (RMIA trails here: the target's confidences of members saturate at 1,
    # where a ratio of probabilities separates less than their logarithm; 2 references)
    assert max(found["loss"]["auc"], found["rmia"]["auc"]) >= 0.8, found
    assert found["loss"]["auc_ci95"][0] > 0.5 and found["rmia"]["auc_ci95"][0] > 0.5, found
    # 60 non-members allow no rate at 1 % FPR: the figure says so instead of printing one
    assert found["loss"]["tpr_at_1pct_fpr"] is None
    assert "60 non-members" in found["loss"]["tpr_at_1pct_fpr_note"]
    assert membership_verdict(found)["level"] == "not measured"
    for attack in ("loss", "rmia"):
        low, high = found[attack]["auc_ci95"]
        assert low <= found[attack]["auc"] <= high


def test_a_model_that_never_saw_the_candidates_is_not(chest_xrays):
    images, labels = chest_xrays
    # the model trains on 240 images that are no candidate; "members" and non-members
    # are 1200 images each that it never saw, from the same source
    unseen = Samples(images[600:3000], labels[600:3000])
    others = Samples(images[3000:4200], labels[3000:4200])
    target = _target(images[:240], labels[:240], unseen, others, seed=2, config=SHORT)
    found = membership_attacks(target, references=2, seed=2)
    assert found["members"] == 1200
    for attack in ("loss", "rmia"):
        assert abs(found[attack]["auc"] - 0.5) <= 0.05, (attack, found[attack])
    assert found["leaks"] is False
    assert membership_verdict(found)["level"] == "no measurable leak"


scores = arrays(np.float64, st.integers(1, 200),
                elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(scores, scores, st.sampled_from([0.001, 0.01, 0.1, 0.5]))
def test_tpr_at_fpr_is_a_rate_that_grows_with_the_fpr(members, non_members, fpr):
    rate = tpr_at_fpr(members, non_members, fpr)
    assert 0.0 <= rate <= 1.0
    assert tpr_at_fpr(members, non_members, min(1.0, 2 * fpr)) >= rate
    # the threshold lets at most fpr of the non-members through
    assert tpr_at_fpr(non_members, non_members, fpr) <= fpr + 1e-12


confidences = arrays(np.float64, st.integers(1, 60),
                     elements=st.floats(1e-6, 1.0, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(confidences, confidences, st.integers(1, 4))
def test_rmia_scores_are_shares_monotone_in_the_target_confidence(target, target_z, refs):
    rng = np.random.default_rng(len(target) * 31 + len(target_z))
    references = rng.uniform(1e-6, 1, (refs, len(target)))
    references_z = rng.uniform(1e-6, 1, (refs, len(target_z)))
    found = rmia_scores(target, references, target_z, references_z)
    assert found.shape == target.shape
    assert np.all((found >= 0) & (found <= 1))
    higher = rmia_scores(np.minimum(1.0, target * 2), references, target_z, references_z)
    assert np.all(higher >= found)


def test_the_verdict_reads_the_lower_end_of_the_interval():
    leak = {"loss": {"auc": 0.9, "tpr_at_1pct_fpr": 0.3, "tpr_at_1pct_fpr_ci95": [0.2, 0.4]},
            "rmia": {"auc": 0.95, "tpr_at_1pct_fpr": 0.02,
                     "tpr_at_1pct_fpr_ci95": [0.005, 0.04]}}
    assert membership_leaks(leak) is True
    assert membership_verdict(leak)["level"] == "leaks membership"
    leak["loss"]["tpr_at_1pct_fpr_ci95"] = [0.0, 0.4]
    assert membership_leaks(leak) is False
    few = {"loss": {"auc": 0.9, "tpr_at_1pct_fpr": None, "tpr_at_1pct_fpr_note": "too few"}}
    assert membership_leaks(few) is None
    assert membership_verdict(few)["level"] == "not measured"
    assert membership_verdict({"not_measured": "no model"})["verdict"].endswith("no model")
