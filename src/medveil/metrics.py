"""Utility and image-similarity metrics, from torchmetrics and MONAI.

Nothing here is hand-written: the point of a benchmark is that its figures
mean what the field means by them.
"""

from __future__ import annotations

import numpy as np


def _tensor(array):
    import torch

    return torch.as_tensor(np.asarray(array))


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, AUC (one-vs-rest macro for more than two classes), F1 and MCC.

    Args:
        probabilities: (N, K) class probabilities.
        labels: (N,) integer labels.
    """
    from torchmetrics.functional.classification import (
        binary_accuracy,
        binary_auroc,
        binary_f1_score,
        binary_matthews_corrcoef,
        multiclass_accuracy,
        multiclass_auroc,
        multiclass_f1_score,
        multiclass_matthews_corrcoef,
    )

    probs = _tensor(probabilities).float()
    target = _tensor(labels).long()
    k = probs.shape[1]
    if k == 2:
        p1 = probs[:, 1]
        return {
            "accuracy": float(binary_accuracy(p1, target)),
            "auc": float(binary_auroc(p1, target)),
            "f1": float(binary_f1_score(p1, target)),
            "mcc": float(binary_matthews_corrcoef(p1, target)),
        }
    return {
        "accuracy": float(multiclass_accuracy(probs, target, num_classes=k, average="micro")),
        "auc": float(multiclass_auroc(probs, target, num_classes=k)),
        "f1": float(multiclass_f1_score(probs, target, num_classes=k, average="macro")),
        "mcc": float(multiclass_matthews_corrcoef(probs, target, num_classes=k)),
    }


def segmentation_metrics(predicted: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean Dice and IoU over images of binary (N, 1, H, W) masks (MONAI)."""
    from monai.metrics import DiceMetric, MeanIoU

    pred = _tensor(predicted).float()
    true = _tensor(masks).float()
    dice = DiceMetric(include_background=True, reduction="mean", ignore_empty=False)
    iou = MeanIoU(include_background=True, reduction="mean", ignore_empty=False)
    return {"dice": float(dice(pred, true).mean()), "iou": float(iou(pred, true).mean())}


def image_similarity(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """Mean SSIM (11x11 Gaussian window, data range 1) and PSNR over images in [0, 1]."""
    import torch
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    ref = _tensor(reference).float().clamp(0, 1)
    est = _tensor(estimate).float().clamp(0, 1)
    if ref.shape != est.shape:
        raise ValueError(f"shapes differ: {tuple(ref.shape)} vs {tuple(est.shape)}")
    ssim = structural_similarity_index_measure(est, ref, data_range=1.0, kernel_size=11,
                                               sigma=1.5, reduction="none")
    psnr = peak_signal_noise_ratio(est, ref, data_range=1.0, reduction="none",
                                   dim=tuple(range(1, ref.ndim)))
    psnr = torch.clamp(psnr, max=100.0)  # identical images: report 100 dB, not infinity
    return {"ssim": float(ssim.mean()), "psnr": float(psnr.mean())}
