"""Utility, image-similarity and texture metrics, from torchmetrics, MONAI and scikit-image.

Nothing here is hand-written: the point of a benchmark is that its figures
mean what the field means by them.
"""

from __future__ import annotations

import numpy as np


def _tensor(array):
    import torch

    return torch.as_tensor(np.asarray(array))


def probabilities_from_logits(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so decrypted logits never overflow."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


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


def per_image_segmentation(predicted: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Dice and IoU of each image (MONAI, as :func:`segmentation_metrics`, whose figures
    are these arrays' means): what a bootstrap over test images resamples."""
    from monai.metrics import DiceMetric, MeanIoU

    pred = _tensor(predicted).float()
    true = _tensor(masks).float()
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)
    return {"dice": dice(pred, true).numpy().reshape(len(pred), -1).mean(axis=1),
            "iou": iou(pred, true).numpy().reshape(len(pred), -1).mean(axis=1)}


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


def per_image_ssim(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """SSIM of each image pair (the same window as :func:`image_similarity`)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ref = _tensor(reference).float().clamp(0, 1)
    est = _tensor(estimate).float().clamp(0, 1)
    return structural_similarity_index_measure(est, ref, data_range=1.0, kernel_size=11,
                                               sigma=1.5, reduction="none").numpy()


def standardized(images: np.ndarray) -> np.ndarray:
    """Each image flattened, centred and scaled to unit norm: the dot product of two rows
    is their Pearson correlation, the quality of the best affine map between them."""
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-8)


def affine_fitted(reference: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """``picture`` after the best per-image, per-channel affine intensity map onto
    ``reference`` (least squares, slope of either sign), clipped to [0, 1].

    A reader can invert a picture's contrast and rescale it without any training; a
    contrast-inverted or rescaled view scores low on raw SSIM although it shows the
    same anatomy. Scoring after this map makes the visual figure invariant to that.
    """
    ref = np.asarray(reference, dtype=np.float64)
    pic = np.asarray(picture, dtype=np.float64)
    axes = (2, 3)
    pic_mean, ref_mean = pic.mean(axis=axes, keepdims=True), ref.mean(axis=axes, keepdims=True)
    centred = pic - pic_mean
    variance = (centred ** 2).mean(axis=axes, keepdims=True)
    slope = np.where(variance > 1e-12, (centred * (ref - ref_mean)).mean(
        axis=axes, keepdims=True) / np.maximum(variance, 1e-12), 0.0)
    return np.clip(slope * centred + ref_mean, 0.0, 1.0).astype(np.float32)


def attacker_floor(public: np.ndarray, victims: np.ndarray) -> float:
    """The SSIM of the attacker's best guess without any view (the mean of its public
    images) against the victims: what every reconstruction must beat to show a leak."""
    mean = np.repeat(public.mean(axis=0, keepdims=True), len(victims), axis=0)
    return image_similarity(victims, mean)["ssim"]


def advantage(figure: float, floor: float) -> float:
    """How far an attack's SSIM gets above the attacker's best guess without the view,
    towards a perfect copy: ``(figure - floor) / (1 - floor)`` (0: nothing learned)."""
    return float((figure - floor) / max(1e-9, 1.0 - floor))


def structure_detection(masks: np.ndarray, pictures: np.ndarray) -> np.ndarray:
    """Per image: how well an untrained ridge detector on the picture finds the
    patient's annotated structure (the mask's foreground: a fundus's vessels), as the
    AUC over every pixel; NaN where the mask is empty or full.

    A view can show a patient's vessel tree plainly while scoring below the floor on
    SSIM (a low-resolution, contrast-changed vessel map looks nothing like the
    photograph pixel by pixel). Vessels are what a reader and a retinal matcher look
    at, so this figure asks the question directly. The detector is Sato's tubeness at
    sigmas ``side / 128`` and twice that (at least 0.5 px), dark and bright ridges
    both, the better of the two; it needs no training and no plaintext.
    """
    from skimage.filters import sato
    from torchmetrics.functional.classification import binary_auroc

    grey = np.asarray(pictures, dtype=np.float64).mean(axis=1)
    truth = np.asarray(masks).reshape(grey.shape) > 0
    sigma = max(0.5, grey.shape[-1] / 128)
    out = np.full(len(grey), np.nan)
    for i, (picture, mask) in enumerate(zip(grey, truth, strict=True)):
        if mask.all() or not mask.any():
            continue
        target = _tensor(mask.ravel().astype(np.int64))
        out[i] = max(float(binary_auroc(_tensor(sato(picture, sigmas=(sigma, 2 * sigma),
                                                         black_ridges=dark).ravel()), target))
                     for dark in (True, False))
    return out


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a hit rate measured on ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


GLCM_FEATURES = ("contrast", "homogeneity", "energy", "correlation")


def glcm_features(images: np.ndarray, *, levels: int = 32) -> dict[str, np.ndarray]:
    """Grey-level co-occurrence features per image (scikit-image's GLCM, as PRIMIS reports).

    Images in [0, 1] are quantised to ``levels`` grey levels; the matrix is symmetric
    and normalised, at distance 1 over the four directions 0, 45, 90 and 135 degrees,
    and each feature is averaged over the directions (the usual rotation-invariant form).
    """
    from skimage.feature import graycomatrix, graycoprops

    flat = np.asarray(images, dtype=np.float32).reshape(-1, *np.shape(images)[-2:])
    quantised = np.clip(np.rint(flat * (levels - 1)), 0, levels - 1).astype(np.uint8)
    out = {name: np.zeros(len(quantised)) for name in GLCM_FEATURES}
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    for i, image in enumerate(quantised):
        matrix = graycomatrix(image, [1], angles, levels=levels, symmetric=True, normed=True)
        for name in GLCM_FEATURES:
            out[name][i] = float(np.nanmean(graycoprops(matrix, name)))
    return out


def texture_agreement(reference: np.ndarray, estimate: np.ndarray, *, levels: int = 32
                      ) -> dict[str, dict[str, float]]:
    """How well ``estimate`` keeps ``reference``'s GLCM texture, per feature.

    ``pearson``: correlation of the feature across images (does the ranking of
    textures survive?); ``mean_abs_rel_error``: mean |f(est) - f(ref)| / |f(ref)|.
    """
    ref, est = glcm_features(reference, levels=levels), glcm_features(estimate, levels=levels)
    out = {}
    for name in GLCM_FEATURES:
        a, b = ref[name], est[name]
        pearson = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() and b.std() else 1.0
        rel = float(np.mean(np.abs(b - a) / np.maximum(np.abs(a), 1e-8)))
        out[name] = {"pearson": pearson, "mean_abs_rel_error": rel,
                     "reference_mean": float(a.mean()), "estimate_mean": float(b.mean())}
    return out
