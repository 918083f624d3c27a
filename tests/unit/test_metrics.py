from __future__ import annotations

import numpy as np
import pytest

from medveil.metrics import classification_metrics, image_similarity, segmentation_metrics


def test_image_similarity_on_real_crops(cxr_crops):
    same = image_similarity(cxr_crops, cxr_crops)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5) and same["psnr"] == 100.0
    rng = np.random.default_rng(0)
    noisy = np.clip(cxr_crops + rng.normal(0, 0.1, cxr_crops.shape), 0, 1).astype(np.float32)
    result = image_similarity(cxr_crops, noisy)
    assert 0.1 < result["ssim"] < 0.9 and 18 < result["psnr"] < 22  # sigma 0.1 ~ 20 dB
    shuffled = image_similarity(cxr_crops, cxr_crops[::-1].copy())
    assert shuffled["ssim"] < same["ssim"]


def test_classification_metrics_binary_and_multiclass():
    labels = np.array([0, 0, 1, 1])
    perfect = classification_metrics(np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7],
                                               [0.1, 0.9]]), labels)
    assert perfect == {"accuracy": 1.0, "auc": 1.0, "f1": 1.0, "mcc": 1.0}
    inverted = classification_metrics(np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3],
                                                [0.9, 0.1]]), labels)
    assert inverted["auc"] == 0.0 and inverted["mcc"] == -1.0
    three = classification_metrics(np.eye(3)[[0, 1, 2, 2]] * 0.9 + 0.033, np.array([0, 1, 2, 2]))
    assert three["accuracy"] == 1.0


def test_segmentation_metrics(chase):
    masks = chase.masks[:2]
    assert segmentation_metrics(masks, masks) == {"dice": 1.0, "iou": 1.0}
    empty = segmentation_metrics(np.zeros_like(masks), masks)
    assert empty["dice"] == 0.0
    half = masks.copy()
    half[:, :, :128] = 0
    assert 0.2 < segmentation_metrics(half, masks)["dice"] < 0.9
