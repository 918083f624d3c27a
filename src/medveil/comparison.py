"""Utility with its uncertainty: each row's figures with 95 % intervals, and each row
against ``plain`` on the same test images (a paired test, never a bare difference).

A single-seed AUC moves by several hundredths with the training seed and the thread
count (docs/benchmarks.md); a scorecard that ranks schemes by such figures without
their intervals ranks noise. Intervals here are over the test images (the uncertainty
of a figure measured on a finite test set); the spread over training seeds is the
sweep's (:mod:`medveil.sweep_summary`).

Methods (named in each figure): AUC by DeLong et al. 1988 (paired DeLong for the
difference of two AUCs on the same images); accuracy, F1, MCC by a bootstrap over
test images stratified by true class; Dice and IoU by a bootstrap over images;
paired differences of those by the paired bootstrap (the same resampled images for
both rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from medveil.metrics import per_image_segmentation
from medveil.seeds import numpy_rng

if TYPE_CHECKING:
    from medveil.data.imageset import ImageSet
    from medveil.protocols.base import Decoded

#: bootstrap resamples of every interval
RESAMPLES = 2000
#: the row the others are compared with
REFERENCE_ROW = "plain"


def per_image_outcome(decoded: Decoded, truth: ImageSet) -> dict[str, np.ndarray]:
    """What a paired comparison needs of a row, per test image: the class probabilities
    (classification) or each image's Dice and IoU (segmentation)."""
    if decoded.task == "classification":
        return {"probabilities": np.asarray(decoded.probabilities, dtype=np.float64)}
    return per_image_segmentation(decoded.masks, truth.masks)


def utility_intervals(per_image: dict[str, np.ndarray], labels: np.ndarray | None, *,
                      seed: int) -> dict[str, dict[str, Any]]:
    """Every utility figure with its 95 % interval (``{metric: {estimate, low, high,
    method}}``)."""
    from medveil.stats import classification_intervals, segmentation_intervals

    rng = numpy_rng(seed, "utility/bootstrap")
    if "probabilities" in per_image:
        found = classification_intervals(per_image["probabilities"], labels, rng=rng,
                                         resamples=RESAMPLES)
    else:
        found = segmentation_intervals(per_image, rng=rng, resamples=RESAMPLES)
    return {name: interval.to_dict() for name, interval in found.items()}


def versus_reference(per_image: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                     labels: np.ndarray | None, *, seed: int) -> dict[str, dict[str, Any]]:
    """This row minus the reference row on the same test images, per figure: the paired
    difference with its 95 % interval and two-sided p-value."""
    from medveil.stats import paired_classification, paired_segmentation

    rng = numpy_rng(seed, "utility/paired-bootstrap")
    if "probabilities" in per_image:
        found = paired_classification(per_image["probabilities"], reference["probabilities"],
                                      labels, rng=rng, resamples=RESAMPLES)
    else:
        found = paired_segmentation(per_image, reference, rng=rng, resamples=RESAMPLES)
    return {name: difference.to_dict() for name, difference in found.items()}


def add_paired_comparisons(rows: list[dict[str, Any]],
                           per_image: dict[str, dict[str, np.ndarray] | None],
                           *, labels: np.ndarray | None, seed: int) -> None:
    """Set each ``ok`` row's ``vs_plain`` (this row minus the reference row, paired on the
    same test images); nothing where either row has no per-image outcome."""
    reference = per_image.get(REFERENCE_ROW)
    if reference is None:
        return
    for row in rows:
        mine = per_image.get(row["scheme"])
        if row["scheme"] == REFERENCE_ROW or row.get("status") != "ok" or mine is None:
            continue
        row["vs_plain"] = versus_reference(mine, reference, labels, seed=seed)


def utility_statement(difference: dict[str, Any], *, metric: str) -> str:
    """The report's words for one paired difference: a cost, a gain, or none measurable
    (the interval holds zero)."""
    low, high, estimate = difference["low"], difference["high"], difference["estimate"]
    interval = f"{estimate:+.3f} [{low:+.3f}, {high:+.3f}], p = {difference['p_value']:.3g}"
    if low > 0:
        return f"better than plain on {metric}: {interval}"
    if high < 0:
        return f"costs {metric}: {interval}"
    return f"no measurable {metric} cost: {interval}"
