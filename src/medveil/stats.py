"""Uncertainty of utility figures: confidence intervals and paired differences.

A benchmark row that says "AUC 0.91" on 160 test images says little until it also
says how far that figure could move on another draw of 160 images, and whether the
gap to the plaintext reference row is larger than that. This module gives every
utility figure an :class:`Interval` and every row-versus-reference comparison a
:class:`Difference` with a p-value.

Two methods, each where it is the standard:

* AUC of a binary task: DeLong, DeLong & Clarke-Pearson (1988), the nonparametric
  variance from the structural components of the Mann-Whitney statistic, computed
  with the O(n log n) midrank algorithm of Sun & Xu (2014). Closed form, no
  resampling noise, and the paired version uses the covariance of two AUCs measured
  on the same images, which is what makes a small gap between two correlated
  classifiers detectable.
* Everything else (accuracy, F1, MCC, one-vs-rest AUC for more than two classes,
  per-image Dice and IoU): the percentile bootstrap. Classification resamples are
  stratified by true class, so every resample has the class balance of the test set
  (the metrics are defined for that set, and a resample without positives would
  have no F1 or AUC). Paired differences resample the same images for both rows.

Point estimates are the figures :func:`medveil.metrics.classification_metrics`
reports (torchmetrics), reproduced here in numpy so that thousands of resamples cost
milliseconds: the probabilities are rounded to float32 first, as that function
does, so ties and the 0.5 threshold fall the same way, and torchmetrics' conventions
for empty denominators are kept (see :func:`_mcc`).

Randomness is always a :class:`numpy.random.Generator` passed in by the caller, never
global state, so a table can be regenerated bit for bit from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medveil.errors import ConfigError, DataError

__all__ = [
    "CLASSIFICATION_METRICS",
    "Difference",
    "Interval",
    "classification_intervals",
    "delong_auc",
    "delong_paired",
    "paired_classification",
    "paired_segmentation",
    "segmentation_intervals",
]

#: The figures :func:`classification_intervals` returns, in table order.
CLASSIFICATION_METRICS = ("accuracy", "auc", "f1", "mcc")

#: torchmetrics' epsilon in its degenerate binary MCC (float32 machine epsilon).
_EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Interval:
    """A figure with its two-sided confidence interval.

    Attributes:
        estimate: the figure on the whole test set.
        low, high: the interval's bounds (``low <= high``).
        method: how the bounds were found: "delong" or "bootstrap".
    """

    estimate: float
    low: float
    high: float
    method: str

    def to_dict(self) -> dict[str, float | str]:
        """The plain dict a JSON report stores."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "method": self.method}


@dataclass(frozen=True)
class Difference:
    """A row's figure minus the reference row's, paired on the same test images.

    Attributes:
        estimate: figure(row) - figure(reference) on the whole test set.
        low, high: the difference's two-sided confidence interval.
        p_value: two-sided p-value of "no difference".
        method: "delong-paired" or "paired-bootstrap".
    """

    estimate: float
    low: float
    high: float
    p_value: float
    method: str

    def to_dict(self) -> dict[str, float | str]:
        """The plain dict a JSON report stores."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "p_value": self.p_value, "method": self.method}


# --------------------------------------------------------------------------- checks


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level must lie strictly between 0 and 1, got {level}")
    return level


def _check_resampling(rng: np.random.Generator, resamples: int) -> int:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError("rng must be a numpy.random.Generator, e.g. "
                          f"numpy.random.default_rng(seed); got {type(rng).__name__}")
    if isinstance(resamples, bool) or int(resamples) != resamples or resamples < 1:
        raise ConfigError(f"resamples must be a positive whole number, got {resamples!r}")
    return int(resamples)


def _z(level: float) -> float:
    """The standard normal quantile of a two-sided ``level`` interval (1.96 for 95 %)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))


def _finite_vector(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(f"{name} must be one value per image (1-D), got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise DataError(f"{name} has a non-finite value (first at index {bad}: {array[bad]}); "
                        "drop or fix those images before computing intervals")
    return array


def _integer_labels(labels: np.ndarray, n: int, classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise DataError(f"labels must be one class per image (1-D), got shape {array.shape}")
    if len(array) != n:
        raise DataError(f"lengths differ: {n} predictions but {len(array)} labels; "
                        "both must describe the same test images in the same order")
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.rint(array)).all():
        array = array.astype(np.int64)
    if array.dtype.kind not in "biu":
        raise DataError(f"labels must be whole class numbers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if n and (array.min() < 0 or array.max() >= classes):
        raise DataError(f"labels must lie in 0..{classes - 1} for {classes} classes, "
                        f"got values {array.min()}..{array.max()}")
    return array


def _binary_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """Labels as a boolean "is class 1" mask, requiring at least two of each class."""
    positive = _integer_labels(labels, n, 2) == 1
    n1 = int(positive.sum())
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        raise DataError(f"AUC is undefined with a single class present ({n0} of class 0, "
                        f"{n1} of class 1); the test set needs images of both classes")
    if n1 < 2 or n0 < 2:
        raise DataError(f"DeLong's variance needs at least two images of each class, got "
                        f"{n0} of class 0 and {n1} of class 1")
    return positive


# --------------------------------------------------------------------------- DeLong


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (Sun & Xu's midranks)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    n = len(values)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], n]
    ranks = np.empty(n)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _structural_components(scores: np.ndarray, positive: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components of (k, N) scores, by midranks.

    V10[r, i] is the share of negatives that positive i outranks (ties counting one
    half), V01[r, j] the share of positives that outrank negative j; both average to
    the AUC. Sun & Xu (2014): with midranks Tz over all images, Tx among positives and
    Ty among negatives, V10 = (Tz - Tx) / n and V01 = 1 - (Tz - Ty) / m.
    """
    pos, neg = scores[:, positive], scores[:, ~positive]
    m, n = pos.shape[1], neg.shape[1]
    v10 = np.empty((len(scores), m))
    v01 = np.empty((len(scores), n))
    for r in range(len(scores)):
        tz = _midranks(np.concatenate([pos[r], neg[r]]))
        v10[r] = (tz[:m] - _midranks(pos[r])) / n
        v01[r] = 1.0 - (tz[m:] - _midranks(neg[r])) / m
    return v10.mean(axis=1), v10, v01


def delong_auc(scores: np.ndarray, labels: np.ndarray, *, level: float = 0.95) -> Interval:
    """Binary AUC with DeLong's (1988) nonparametric confidence interval.

    The AUC is the Mann-Whitney statistic (ties count one half), the same number as
    the trapezoidal ROC area torchmetrics reports. Its variance is
    ``S10 / m + S01 / n`` from the structural components (see
    :func:`_structural_components`), computed in O(N log N) by Sun & Xu's midrank
    algorithm. The interval is the Wald interval ``estimate +- z * se``, clipped to
    [0, 1]: the textbook DeLong interval, simple to check against other software. It
    is symmetric, so near 0 or 1 it can be conservative on one side; a perfectly
    separating score has zero estimated variance and a zero-width interval.

    Args:
        scores: (N,) scores, higher meaning class 1 (e.g. the probability of class 1).
        labels: (N,) labels in {0, 1}, at least two of each.
        level: two-sided confidence level.
    """
    level = _check_level(level)
    values = _finite_vector("scores", scores)
    positive = _binary_labels(labels, len(values))
    auc, v10, v01 = _structural_components(values[None, :], positive)
    variance = v10[0].var(ddof=1) / v10.shape[1] + v01[0].var(ddof=1) / v01.shape[1]
    estimate = float(auc[0])
    half = _z(level) * float(np.sqrt(variance))
    return Interval(estimate, max(0.0, estimate - half), min(1.0, estimate + half), "delong")


def delong_paired(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, *,
                  level: float = 0.95) -> Difference:
    """AUC(a) - AUC(b) on the same images, with DeLong's paired z-test.

    Two classifiers scored on the same images have correlated AUCs; DeLong's
    covariance of the two structural components accounts for that, so the test is
    much sharper than comparing two separate intervals. The variance of the
    difference is computed directly from the differences of the components
    (``var(V10a - V10b) / m + var(V01a - V01b) / n``, algebraically the same as
    ``var_a + var_b - 2 cov_ab``), so identical inputs give exactly zero.

    p-value: two-sided, ``2 * (1 - Phi(|d| / se))``. With zero variance the
    difference is reported as certain: p = 1 when it is 0, else p = 0. Interval:
    ``d +- z * se`` clipped to [-1, 1].
    """
    level = _check_level(level)
    a = _finite_vector("scores_a", scores_a)
    b = _finite_vector("scores_b", scores_b)
    if len(a) != len(b):
        raise DataError(f"lengths differ: scores_a has {len(a)} images, scores_b {len(b)}; "
                        "a paired comparison needs the same test images in the same order")
    positive = _binary_labels(labels, len(a))
    auc, v10, v01 = _structural_components(np.stack([a, b]), positive)
    d10, d01 = v10[0] - v10[1], v01[0] - v01[1]
    se = float(np.sqrt(d10.var(ddof=1) / len(d10) + d01.var(ddof=1) / len(d01)))
    estimate = float(auc[0] - auc[1])
    if se > 0.0:
        from scipy.stats import norm

        p_value = float(min(1.0, 2.0 * norm.sf(abs(estimate) / se)))
    else:
        p_value = 1.0 if estimate == 0.0 else 0.0
    half = _z(level) * se
    return Difference(estimate, max(-1.0, estimate - half), min(1.0, estimate + half),
                      p_value, "delong-paired")


# --------------------------------------------------------------------------- classification


def _check_probabilities(probabilities: np.ndarray, labels: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) probabilities rounded to float32 (as classification_metrics scores them)
    and (N,) integer labels, every class present."""
    array = np.asarray(probabilities)
    if array.ndim != 2 or array.shape[1] < 2:
        raise DataError(f"probabilities must be (N, K) with K >= 2 classes, "
                        f"got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"probabilities must be numbers, got dtype {array.dtype}")
    probs = array.astype(np.float32).astype(np.float64)
    if not np.isfinite(probs).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(probs))[0])
        raise DataError(f"probabilities have a non-finite value (first at {bad}); "
                        "drop or fix those images before computing intervals")
    if (probs < 0).any() or (probs > 1).any():
        raise DataError("probabilities must lie in [0, 1]; turn logits into probabilities "
                        "with medveil.metrics.probabilities_from_logits first")
    n, k = probs.shape
    target = _integer_labels(labels, n, k)
    counts = np.bincount(target, minlength=k)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        if (counts > 0).sum() < 2:
            raise DataError(f"AUC is undefined with a single class present "
                            f"(class counts {counts.tolist()}); the test set needs images "
                            "of at least two classes")
        raise DataError(f"class(es) {missing} have no test images, so their one-vs-rest AUC "
                        f"is undefined (class counts {counts.tolist()}); torchmetrics would "
                        "count them as AUC 0. Evaluate on a test set with every class")
    return probs, target


def _predicted(probs: np.ndarray) -> np.ndarray:
    """torchmetrics' predicted class: binary ``p1 > 0.5`` (strictly), else the argmax
    (first of tied maxima, as torch's argmax)."""
    if probs.shape[1] == 2:
        return (probs[:, 1] > 0.5).astype(np.int64)
    return probs.argmax(axis=1)


def _stratified_indices(target: np.ndarray, rng: np.random.Generator, resamples: int
                        ) -> np.ndarray:
    """(resamples, N) image indices, each row drawing every true class's images with
    replacement as many times as that class has images (classes in ascending order)."""
    columns = []
    for c in np.unique(target):
        members = np.flatnonzero(target == c)
        columns.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(columns, axis=1)


def _plain_indices(n: int, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples, n) image indices drawn with replacement."""
    return rng.integers(0, n, size=(resamples, n))


def _confusions(target: np.ndarray, predicted: np.ndarray, index: np.ndarray, k: int
                ) -> np.ndarray:
    """(B, K, K) confusion counts (rows true, columns predicted) of each index row."""
    cells = target * k + predicted
    b = len(index)
    flat = cells[index] + (k * k) * np.arange(b)[:, None]
    return np.bincount(flat.ravel(), minlength=b * k * k).reshape(b, k, k).astype(np.float64)


def _weights(index: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each image appears in each index row."""
    b = len(index)
    flat = index + n * np.arange(b)[:, None]
    return np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _accuracy(conf: np.ndarray) -> np.ndarray:
    return np.trace(conf, axis1=-2, axis2=-1) / conf.sum(axis=(-2, -1))


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (torchmetrics' _safe_divide)."""
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _f1(conf: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1, or macro F1 over classes for K > 2 (torchmetrics).

    A class's F1 with an empty denominator is 0; the macro average skips classes with
    no true, predicted or missed image at all (tp + fp + fn == 0), as torchmetrics does.
    """
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    fp = conf.sum(axis=-2) - tp
    fn = conf.sum(axis=-1) - tp
    per_class = _safe_ratio(2 * tp, 2 * tp + fp + fn)
    if conf.shape[-1] == 2:
        return per_class[..., 1]
    weight = ((tp + fp + fn) > 0).astype(np.float64)
    return _safe_ratio((weight * per_class).sum(axis=-1), weight.sum(axis=-1))


def _mcc(conf: np.ndarray) -> np.ndarray:
    """Matthews correlation (Gorodkin's K-class form), with torchmetrics' conventions.

    K > 2: 0 where the denominator vanishes. Binary: 1 when every image is right and
    -1 when every image is wrong; where a row or column of the confusion matrix is
    empty, torchmetrics does not return 0 but a limit with an epsilon (float32 machine
    epsilon) in the denominator, e.g. ``sqrt(eps) (tp - fp) / sqrt((tp + fp + eps)
    (tp + eps) (fp + eps) eps)`` when everything is predicted positive. It is copied
    here branch for branch, so that the bootstrap resamples the very statistic
    classification_metrics reports.
    """
    tk = conf.sum(axis=-1)
    pk = conf.sum(axis=-2)
    c = np.trace(conf, axis1=-2, axis2=-1)
    s = conf.sum(axis=(-2, -1))
    cov_ytyp = c * s - (tk * pk).sum(axis=-1)
    cov_ypyp = s ** 2 - (pk * pk).sum(axis=-1)
    cov_ytyt = s ** 2 - (tk * tk).sum(axis=-1)
    denominator = cov_ypyp * cov_ytyt
    out = _safe_ratio(cov_ytyp, np.sqrt(np.maximum(denominator, 0.0)))
    if conf.shape[-1] != 2:
        return out
    tn, fp, fn, tp = conf[..., 0, 0], conf[..., 0, 1], conf[..., 1, 0], conf[..., 1, 1]
    root = np.sqrt(_EPS32)
    conditions = [(fn == 0) & (tn == 0), (fp == 0) & (tn == 0), (tp == 0) & (fn == 0),
                  (tp == 0) & (fp == 0), tp == 0, tn == 0, (fp == 0) | (fn == 0)]
    numerators = [root * (tp - fp), root * (tp - fn), root * (tn - fp), root * (tn - fn),
                  tn - fp * fn, tp - fp * fn, tp * tn]
    limit = np.select(conditions, numerators, default=0.0) / np.sqrt(
        (tp + fp + _EPS32) * (tp + fn + _EPS32) * (tn + fp + _EPS32) * (tn + fn + _EPS32))
    out = np.where(denominator == 0, limit, out)
    out = np.where((tp + tn != 0) & (fp + fn == 0), 1.0, out)
    return np.where((tp + tn == 0) & (fp + fn != 0), -1.0, out)


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) Mann-Whitney AUC of each resample, given as (B, N) image multiplicities.

    The negatives are sorted once; for each resample the cumulative multiplicity of
    the sorted negatives says how many (resampled) negatives lie below and tie with
    each positive, so no resample is sorted: O(B N) after one O(N log N) sort.
    """
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    order = np.argsort(scores[neg], kind="mergesort")
    ordered = scores[neg][order]
    w_neg = weights[:, neg[order]]
    cumulative = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(w_neg, axis=1)], axis=1)
    below = np.searchsorted(ordered, scores[pos], side="left")
    upto = np.searchsorted(ordered, scores[pos], side="right")
    beaten = cumulative[:, below] + 0.5 * (cumulative[:, upto] - cumulative[:, below])
    w_pos = weights[:, pos]
    return (w_pos * beaten).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def _macro_auc(probs: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) one-vs-rest macro AUC: the mean over classes of each class's binary AUC."""
    k = probs.shape[1]
    return np.mean([_weighted_auc(probs[:, c], target == c, weights) for c in range(k)], axis=0)


def _figures(probs: np.ndarray, target: np.ndarray, index: np.ndarray, *, auc: bool
             ) -> dict[str, np.ndarray]:
    """(B,) accuracy, F1, MCC (and macro AUC when ``auc``) of each index row."""
    k = probs.shape[1]
    conf = _confusions(target, _predicted(probs), index, k)
    out = {"accuracy": _accuracy(conf), "f1": _f1(conf), "mcc": _mcc(conf)}
    if auc:
        out["auc"] = _macro_auc(probs, target, _weights(index, len(target)))
    return out


def _percentile(replicates: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(replicates, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def classification_intervals(probabilities: np.ndarray, labels: np.ndarray, *,
                             rng: np.random.Generator, resamples: int = 2000,
                             level: float = 0.95) -> dict[str, Interval]:
    """Accuracy, AUC, F1 and MCC with confidence intervals.

    Estimates are those of :func:`medveil.metrics.classification_metrics`. Binary
    (K = 2): AUC by :func:`delong_auc` on the probability of class 1; accuracy, F1 (of
    class 1) and MCC by a percentile bootstrap stratified by true class. K > 2: all
    four by that bootstrap, with micro accuracy, macro F1, Gorodkin's MCC and the
    one-vs-rest macro AUC.

    The percentile interval is the 2.5 and 97.5 % quantiles (for 95 %) of the
    resampled figures. It is honest about skew, but on a tiny or degenerate test set
    it can fail to contain the estimate; a few hundred images make that very rare.

    Args:
        probabilities: (N, K) class probabilities in [0, 1].
        labels: (N,) integer labels in 0..K-1; every class must be present.
        rng: the source of the resamples.
        resamples: bootstrap resamples (2000 gives stable 95 % bounds).
        level: two-sided confidence level.
    """
    level = _check_level(level)
    resamples = _check_resampling(rng, resamples)
    probs, target = _check_probabilities(probabilities, labels)
    binary = probs.shape[1] == 2
    whole = np.arange(len(target))[None, :]
    estimates = {name: float(v[0]) for name, v in
                 _figures(probs, target, whole, auc=not binary).items()}
    replicates = _figures(probs, target, _stratified_indices(target, rng, resamples),
                          auc=not binary)
    out: dict[str, Interval] = {}
    for name in CLASSIFICATION_METRICS:
        if name == "auc" and binary:
            out[name] = delong_auc(probs[:, 1], target, level=level)
        else:
            out[name] = Interval(estimates[name], *_percentile(replicates[name], level),
                                 "bootstrap")
    return out


def _bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of "no difference".

    ``2 * min(share of resampled differences <= 0, share >= 0)``, capped at 1: the
    smallest level at which the two-sided percentile interval would exclude 0.
    Identical rows give 1. Its resolution is ``1 / resamples``: a 0 means no resample
    crossed zero, i.e. p < 2 / resamples, and should be reported as such.
    """
    below = float(np.mean(differences <= 0))
    above = float(np.mean(differences >= 0))
    return min(1.0, 2.0 * min(below, above))


def _difference(estimate: float, differences: np.ndarray, level: float) -> Difference:
    return Difference(float(estimate), *_percentile(differences, level),
                      _bootstrap_p(differences), "paired-bootstrap")


def paired_classification(probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray, *,
                          rng: np.random.Generator, resamples: int = 2000,
                          level: float = 0.95) -> dict[str, Difference]:
    """Row ``a`` minus reference ``b`` for accuracy, AUC, F1 and MCC, on the same images.

    Binary AUC: :func:`delong_paired`. Everything else (and the macro AUC for K > 2):
    a paired bootstrap stratified by true class: each resample picks the same images
    for both rows, so the image-to-image variation both rows share cancels out of the
    difference. Interval: percentile; p-value: see :func:`_bootstrap_p`. Swapping
    ``a`` and ``b`` (with the same seed) negates the estimate and the interval.

    Args:
        probs_a, probs_b: (N, K) probabilities of the two rows, same images, same order.
        labels: (N,) integer labels.
        rng, resamples, level: as in :func:`classification_intervals`.
    """
    level = _check_level(level)
    resamples = _check_resampling(rng, resamples)
    if np.shape(probs_a) != np.shape(probs_b):
        raise DataError(f"shapes differ: probs_a {np.shape(probs_a)} vs probs_b "
                        f"{np.shape(probs_b)}; a paired comparison needs the same test "
                        "images in the same order")
    pa, target = _check_probabilities(probs_a, labels)
    pb, _ = _check_probabilities(probs_b, labels)
    binary = pa.shape[1] == 2
    whole = np.arange(len(target))[None, :]
    est_a = _figures(pa, target, whole, auc=not binary)
    est_b = _figures(pb, target, whole, auc=not binary)
    index = _stratified_indices(target, rng, resamples)
    rep_a = _figures(pa, target, index, auc=not binary)
    rep_b = _figures(pb, target, index, auc=not binary)
    out: dict[str, Difference] = {}
    for name in CLASSIFICATION_METRICS:
        if name == "auc" and binary:
            out[name] = delong_paired(pa[:, 1], pb[:, 1], target, level=level)
        else:
            out[name] = _difference(est_a[name][0] - est_b[name][0],
                                    rep_a[name] - rep_b[name], level)
    return out


# --------------------------------------------------------------------------- segmentation


def _per_image(per_image: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    if not isinstance(per_image, dict) or not per_image:
        raise DataError(f"{name} must be a non-empty dict of per-image figures, "
                        "e.g. {'dice': (N,), 'iou': (N,)}")
    values = {key: _finite_vector(f"{name}[{key!r}]", v) for key, v in per_image.items()}
    lengths = {key: len(v) for key, v in values.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"lengths differ in {name}: {lengths}; every figure needs one value "
                        "per test image")
    if next(iter(lengths.values())) == 0:
        raise DataError(f"{name} holds no images")
    return values


def segmentation_intervals(per_image: dict[str, np.ndarray], *, rng: np.random.Generator,
                           resamples: int = 2000, level: float = 0.95) -> dict[str, Interval]:
    """Mean per-image figures (Dice, IoU, ...) with percentile bootstrap intervals.

    The estimate is the mean over images, what segmentation_metrics reports; the
    bootstrap resamples images (one index matrix shared by all figures), since the
    image, not the pixel, is the independent unit.

    Args:
        per_image: {"dice": (N,), "iou": (N,)} per-image values (any keys).
        rng, resamples, level: as in :func:`classification_intervals`.
    """
    level = _check_level(level)
    resamples = _check_resampling(rng, resamples)
    values = _per_image(per_image, "per_image")
    n = len(next(iter(values.values())))
    index = _plain_indices(n, rng, resamples)
    return {key: Interval(float(v.mean()), *_percentile(v[index].mean(axis=1), level),
                          "bootstrap") for key, v in values.items()}


def paired_segmentation(per_image_a: dict[str, np.ndarray], per_image_b: dict[str, np.ndarray],
                        *, rng: np.random.Generator, resamples: int = 2000,
                        level: float = 0.95) -> dict[str, Difference]:
    """Row ``a`` minus reference ``b`` of mean per-image figures, paired bootstrap.

    Each resample picks the same images for both rows, i.e. it resamples the per-image
    differences. Interval: percentile; p-value: see :func:`_bootstrap_p`.

    Args:
        per_image_a, per_image_b: per-image figures of the two rows, same keys, same
            images in the same order.
        rng, resamples, level: as in :func:`classification_intervals`.
    """
    level = _check_level(level)
    resamples = _check_resampling(rng, resamples)
    a = _per_image(per_image_a, "per_image_a")
    b = _per_image(per_image_b, "per_image_b")
    if set(a) != set(b):
        raise DataError(f"the two rows report different figures: {sorted(a)} vs {sorted(b)}")
    n_a, n_b = len(next(iter(a.values()))), len(next(iter(b.values())))
    if n_a != n_b:
        raise DataError(f"lengths differ: {n_a} images in per_image_a, {n_b} in per_image_b; "
                        "a paired comparison needs the same test images in the same order")
    index = _plain_indices(n_a, rng, resamples)
    out: dict[str, Difference] = {}
    for key in a:
        out[key] = _difference(float(a[key].mean() - b[key].mean()),
                               a[key][index].mean(axis=1) - b[key][index].mean(axis=1), level)
    return out
