"""Full-size plaintext baselines (slow: run with `pytest -m slow`, ~15 minutes)."""

from __future__ import annotations

import pytest

from medveil.data import load_dataset
from medveil.tasks import evaluate_model, train_model
from tests.conftest import shared_path

pytestmark = pytest.mark.slow


def test_classifier_on_cxr64_reaches_auc_093():
    data = load_dataset(shared_path("cxr_pneumonia_64.npz"))
    metrics = evaluate_model(train_model(data, seed=0), data)
    assert metrics["auc"] >= 0.93


def test_unet_on_chase_db1_reaches_dice_070():
    data = load_dataset(shared_path("segmentation", "chase_db1"), size=480)
    metrics = evaluate_model(train_model(data, seed=0), data)
    assert metrics["dice"] >= 0.70
