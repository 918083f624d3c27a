"""Intervals and paired differences of utility figures (medveil.stats)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import mannwhitneyu, norm

from medveil.data import load_dataset
from medveil.data.bundled import DEFAULT_CLASSIFICATION
from medveil.errors import ConfigError, DataError
from medveil.metrics import classification_metrics
from medveil.stats import (
    CLASSIFICATION_METRICS,
    Difference,
    Interval,
    classification_intervals,
    delong_auc,
    delong_paired,
    paired_classification,
    paired_segmentation,
    segmentation_intervals,
)

TEXTBOOK_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3, 0.2, 0.1])
TEXTBOOK_LABELS = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0])


@pytest.fixture(scope="module")
def xray_test():
    """The bundled chest X-rays' test split: (images, labels)."""
    test = load_dataset(DEFAULT_CLASSIFICATION).split("test")
    return test.images, test.labels


def _binary_probabilities(feature: np.ndarray) -> np.ndarray:
    """A fixed, untrained classifier: the standardised feature through a logistic."""
    z = (feature - feature.mean()) / feature.std()
    p1 = 1.0 / (1.0 + np.exp(-z))
    return np.stack([1.0 - p1, p1], axis=1)


@pytest.fixture(scope="module")
def xray_predictions(xray_test):
    """Two untrained score rows on real X-rays: mean intensity and intensity spread."""
    images, labels = xray_test
    flat = images.reshape(len(images), -1).astype(np.float64)
    return _binary_probabilities(flat.mean(axis=1)), _binary_probabilities(flat.std(axis=1)), labels


def _slow_delong(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong 1988 from the definitions, O(m n): AUC, V10 (per positive), V01 (per negative)."""
    x, y = scores[labels == 1], scores[labels == 0]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return float(psi.mean()), psi.mean(axis=1), psi.mean(axis=0)


def _se(bounds: Interval | Difference, level: float) -> float:
    """The standard error behind an unclipped Wald interval."""
    return (bounds.high - bounds.low) / (2.0 * norm.ppf(0.5 + level / 2.0))


def _assert_close_to_metrics(probabilities: np.ndarray, labels: np.ndarray) -> None:
    reference = classification_metrics(probabilities, labels)
    got = classification_intervals(probabilities, labels, rng=np.random.default_rng(0),
                                   resamples=40)
    assert set(got) == set(CLASSIFICATION_METRICS) == set(reference)
    for name in CLASSIFICATION_METRICS:
        assert got[name].estimate == pytest.approx(reference[name], abs=1e-6), name
        assert got[name].low <= got[name].high


# ----------------------------------------------------------------------- (1) estimates


def test_estimates_equal_classification_metrics_on_real_xrays(xray_predictions):
    probs_mean, probs_spread, labels = xray_predictions
    for probs in (probs_mean, probs_spread):
        _assert_close_to_metrics(probs, labels)
        result = classification_intervals(probs, labels, rng=np.random.default_rng(1))
        assert result["auc"].method == "delong"
        assert {result[k].method for k in ("accuracy", "f1", "mcc")} == {"bootstrap"}
        for interval in result.values():  # (5) on a real test set
            assert interval.low <= interval.estimate <= interval.high


PROBABILITY = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0.0, 1.0))


@st.composite
def binary_case(draw):
    extra = draw(arrays(np.int64, st.integers(0, 36), elements=st.integers(0, 1)))
    labels = np.concatenate([[0, 0, 1, 1], extra])
    p1 = draw(arrays(np.float64, len(labels), elements=PROBABILITY))
    return np.stack([1.0 - p1, p1], axis=1), labels


@st.composite
def three_class_case(draw):
    extra = draw(arrays(np.int64, st.integers(0, 36), elements=st.integers(0, 2)))
    labels = np.concatenate([[0, 1, 2], extra])
    weight = st.one_of(st.integers(1, 4).map(float), st.floats(0.01, 1.0))
    raw = draw(arrays(np.float64, (len(labels), 3), elements=weight))
    return raw / raw.sum(axis=1, keepdims=True), labels


@settings(max_examples=60, deadline=None)
@given(case=binary_case())
def test_binary_estimates_equal_classification_metrics(case):
    _assert_close_to_metrics(*case)  # ties and p1 == 0.5 exactly included


@settings(max_examples=60, deadline=None)
@given(case=three_class_case())
def test_three_class_estimates_equal_classification_metrics(case):
    _assert_close_to_metrics(*case)  # tied argmax included


# ----------------------------------------------------------------------- (2), (3) DeLong


@settings(max_examples=60, deadline=None)
@given(scores=arrays(np.float64, st.integers(4, 40), elements=st.sampled_from(
    [0.0, 0.1, 0.2, 0.5, 0.7, 1.0])), data=st.data())
def test_delong_auc_is_the_mann_whitney_auc_with_ties(scores, data):
    labels = data.draw(arrays(np.int64, len(scores), elements=st.integers(0, 1)))
    labels[:2], labels[2:4] = 0, 1
    u = mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    expected = u / ((labels == 1).sum() * (labels == 0).sum())
    assert delong_auc(scores, labels).estimate == pytest.approx(expected, abs=1e-12)


def test_delong_variance_on_the_textbook_example():
    auc, v10, v01 = _slow_delong(TEXTBOOK_SCORES, TEXTBOOK_LABELS)
    variance = v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01)
    level = 0.5  # narrow enough that the interval is not clipped at 1
    result = delong_auc(TEXTBOOK_SCORES, TEXTBOOK_LABELS, level=level)
    assert auc == 0.84 and result.estimate == pytest.approx(0.84, abs=1e-15)
    assert 0.0 < result.low and result.high < 1.0
    assert _se(result, level) ** 2 == pytest.approx(variance, abs=1e-12)


def test_delong_paired_variance_matches_the_definitions():
    other = np.array([0.3, 0.9, 0.2, 0.8, 0.4, 0.6, 0.7, 0.1, 0.5, 0.35])
    auc_a, v10_a, v01_a = _slow_delong(TEXTBOOK_SCORES, TEXTBOOK_LABELS)
    auc_b, v10_b, v01_b = _slow_delong(other, TEXTBOOK_LABELS)
    s = np.cov(np.stack([v10_a, v10_b])) / 5 + np.cov(np.stack([v01_a, v01_b])) / 5
    variance = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    level = 0.5
    result = delong_paired(TEXTBOOK_SCORES, other, TEXTBOOK_LABELS, level=level)
    assert result.estimate == pytest.approx(auc_a - auc_b, abs=1e-12)
    assert _se(result, level) ** 2 == pytest.approx(variance, abs=1e-12)
    z = (auc_a - auc_b) / np.sqrt(variance)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(z)), abs=1e-12)


def test_delong_standard_error_agrees_with_the_bootstrap():
    rng = np.random.default_rng(3)
    m = n = 200
    scores = np.concatenate([rng.normal(1.0, 1.0, m), rng.normal(0.0, 1.0, n)])
    labels = np.concatenate([np.ones(m, int), np.zeros(n, int)])
    level = 0.5
    delong_se = _se(delong_auc(scores, labels, level=level), level)
    beats = (scores[:m, None] > scores[None, m:]) + 0.5 * (scores[:m, None] == scores[None, m:])
    boot = [beats[rng.integers(0, m, m)][:, rng.integers(0, n, n)].mean() for _ in range(1500)]
    assert delong_se == pytest.approx(np.std(boot, ddof=1), rel=0.15)


# ----------------------------------------------------------------------- (4) paired


def test_identical_rows_differ_by_nothing(xray_predictions):
    probs, _, labels = xray_predictions
    for name, diff in paired_classification(probs, probs, labels, rng=np.random.default_rng(0),
                                            resamples=300).items():
        assert (diff.estimate, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0), name
    same = delong_paired(probs[:, 1], probs[:, 1], labels)
    assert (same.estimate, same.p_value, same.method) == (0.0, 1.0, "delong-paired")
    dice = np.random.default_rng(1).random(20)
    for diff in paired_segmentation({"dice": dice}, {"dice": dice},
                                    rng=np.random.default_rng(0), resamples=100).values():
        assert (diff.estimate, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)


def _assert_negated(ab: dict[str, Difference], ba: dict[str, Difference]) -> None:
    assert set(ab) == set(ba)
    for name in ab:
        assert ab[name].estimate == -ba[name].estimate, name
        assert ab[name].low == pytest.approx(-ba[name].high, abs=1e-12), name
        assert ab[name].high == pytest.approx(-ba[name].low, abs=1e-12), name
        assert ab[name].p_value == pytest.approx(ba[name].p_value, abs=1e-12), name
        assert 0.0 <= ab[name].p_value <= 1.0
        assert ab[name].low <= ab[name].estimate <= ab[name].high  # (5)


def test_swapping_rows_negates_the_difference(xray_predictions):
    mean_row, spread_row, labels = xray_predictions
    ab = paired_classification(mean_row, spread_row, labels, rng=np.random.default_rng(5))
    ba = paired_classification(spread_row, mean_row, labels, rng=np.random.default_rng(5))
    _assert_negated(ab, ba)
    assert ab["auc"].method == "delong-paired" and ab["f1"].method == "paired-bootstrap"
    rng = np.random.default_rng(2)
    a = {"dice": rng.random(30), "iou": rng.random(30)}
    b = {"dice": rng.random(30), "iou": rng.random(30)}
    _assert_negated(paired_segmentation(a, b, rng=np.random.default_rng(4)),
                    paired_segmentation(b, a, rng=np.random.default_rng(4)))


def test_three_class_pairing_uses_the_bootstrap_everywhere():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, 90)
    a, b = rng.dirichlet([1, 1, 1], 90), rng.dirichlet([1, 1, 1], 90)
    a[np.arange(90), labels] += 1.0
    a /= a.sum(axis=1, keepdims=True)
    ab = paired_classification(a, b, labels, rng=np.random.default_rng(1), resamples=500)
    ba = paired_classification(b, a, labels, rng=np.random.default_rng(1), resamples=500)
    _assert_negated(ab, ba)
    assert {d.method for d in ab.values()} == {"paired-bootstrap"}
    assert ab["auc"].p_value < 0.01 and ab["auc"].low > 0  # a knows the labels, b does not


@settings(max_examples=30, deadline=None)
@given(case=three_class_case(), seed=st.integers(0, 2**32 - 1))
def test_p_values_are_probabilities(case, seed):
    probs, labels = case
    other = np.random.default_rng(seed).permutation(probs)
    result = paired_classification(probs, other, labels, rng=np.random.default_rng(seed),
                                   resamples=50)
    for diff in result.values():
        assert 0.0 <= diff.p_value <= 1.0 and diff.low <= diff.high


# ----------------------------------------------------------------------- (5), (6) intervals


def test_segmentation_intervals_hold_the_mean():
    rng = np.random.default_rng(0)
    per_image = {"dice": rng.beta(8, 2, 40), "iou": rng.beta(5, 3, 40)}
    result = segmentation_intervals(per_image, rng=np.random.default_rng(1))
    for key, values in per_image.items():
        assert result[key].estimate == pytest.approx(values.mean(), abs=1e-15)
        assert result[key].low <= result[key].estimate <= result[key].high
        assert result[key].method == "bootstrap"
        assert result[key].to_dict() == {"estimate": result[key].estimate,
                                         "low": result[key].low, "high": result[key].high,
                                         "method": "bootstrap"}
    narrow = segmentation_intervals(per_image, rng=np.random.default_rng(1), level=0.5)
    assert narrow["dice"].high - narrow["dice"].low < result["dice"].high - result["dice"].low


def test_bootstrap_is_reproducible_from_the_seed(xray_predictions):
    probs, other, labels = xray_predictions
    first = classification_intervals(probs, labels, rng=np.random.default_rng(11), resamples=400)
    again = classification_intervals(probs, labels, rng=np.random.default_rng(11), resamples=400)
    other_seed = classification_intervals(probs, labels, rng=np.random.default_rng(12),
                                          resamples=400)
    assert first == again and first != other_seed
    pair = paired_classification(probs, other, labels, rng=np.random.default_rng(3), resamples=99)
    assert pair == paired_classification(probs, other, labels, rng=np.random.default_rng(3),
                                         resamples=99)
    dice = {"dice": np.linspace(0.5, 0.9, 25)}
    assert (segmentation_intervals(dice, rng=np.random.default_rng(2), resamples=99)
            == segmentation_intervals(dice, rng=np.random.default_rng(2), resamples=99))
    d = pair["accuracy"].to_dict()
    assert set(d) == {"estimate", "low", "high", "p_value", "method"}


def test_bootstrap_is_fast_enough():
    rng = np.random.default_rng(0)
    labels = (rng.random(624) < 0.6).astype(int)
    p1 = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    start = time.perf_counter()
    classification_intervals(probs, labels, rng=rng)
    paired_classification(probs, probs[::-1].copy(), labels, rng=rng)
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------- (7) errors


def test_clear_errors():
    rng = np.random.default_rng(0)
    probs = np.full((6, 2), 0.5)
    with pytest.raises(DataError, match="single class"):
        delong_auc(np.arange(6.0), np.zeros(6, int))
    with pytest.raises(DataError, match="single class"):
        classification_intervals(probs, np.ones(6, int), rng=rng)
    with pytest.raises(DataError, match="lengths differ"):
        delong_auc(np.arange(6.0), np.array([0, 1, 0, 1, 0]))
    with pytest.raises(DataError, match="lengths differ"):
        classification_intervals(probs, np.array([0, 1, 0, 1]), rng=rng)
    with pytest.raises(DataError, match="lengths differ"):
        delong_paired(np.arange(6.0), np.arange(5.0), np.array([0, 1, 0, 1, 0, 1]))
    with pytest.raises(DataError, match="shapes differ"):
        paired_classification(probs, probs[:5], np.array([0, 1, 0, 1, 0, 1]), rng=rng)
    with pytest.raises(DataError, match="lengths differ"):
        segmentation_intervals({"dice": np.ones(4), "iou": np.ones(5)}, rng=rng)
    with pytest.raises(DataError, match="lengths differ"):
        paired_segmentation({"dice": np.ones(4)}, {"dice": np.ones(5)}, rng=rng)
    with pytest.raises(DataError, match="non-finite"):
        delong_auc(np.array([0.1, np.nan, 0.3, 0.4]), np.array([0, 0, 1, 1]))
    with pytest.raises(DataError, match="non-finite"):
        segmentation_intervals({"dice": np.array([0.5, np.inf])}, rng=rng)
    with pytest.raises(DataError, match=r"class\(es\) \[2\]"):
        classification_intervals(np.full((4, 3), 1 / 3), np.array([0, 1, 0, 1]), rng=rng)
    with pytest.raises(DataError, match="probabilities_from_logits"):
        classification_intervals(np.array([[2.0, -1.0]] * 4), np.array([0, 1, 0, 1]), rng=rng)
    with pytest.raises(DataError, match="at least two images of each class"):
        delong_auc(np.arange(4.0), np.array([0, 1, 1, 1]))
    with pytest.raises(ConfigError, match="Generator"):
        segmentation_intervals({"dice": np.ones(3)}, rng=np.random.RandomState(0))
    with pytest.raises(ConfigError, match="level"):
        delong_auc(np.arange(4.0), np.array([0, 0, 1, 1]), level=95)
