"""Pixel-correspondence inversion: the known-plaintext attack on position scrambling.

Schemes that move pixels to keyed places and flip or rescale them (block
scrambling, learnable image encryption) apply the same map to every image. With
K leaked pairs, each plaintext pixel's source is the view pixel whose values
correlate with it most strongly across the pairs; a one-variable linear fit
(which absorbs negative-positive flips and rescaling) then inverts it. Global
and exact where the U-Net is local and approximate, so the suite runs both
and keeps whichever does better on held-out leaked pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CorrespondenceInverter:
    source: np.ndarray  # (D,) index of the view pixel each plaintext pixel comes from
    slope: np.ndarray  # (D,)
    intercept: np.ndarray  # (D,)
    image_shape: tuple[int, ...]

    def invert(self, views: np.ndarray) -> np.ndarray:
        flat = views.reshape(len(views), -1).astype(np.float64)
        out = flat[:, self.source] * self.slope + self.intercept
        return np.clip(out, 0, 1).reshape(len(views), *self.image_shape).astype(np.float32)


def fit_correspondence(views: np.ndarray, images: np.ndarray, *,
                       chunk: int = 1024) -> CorrespondenceInverter | None:
    """Match each plaintext pixel to its best-correlated view pixel; None if not applicable."""
    if views.ndim < 2 or len(views) < 3:
        return None
    v = views.reshape(len(views), -1).astype(np.float64)
    x = images.reshape(len(images), -1).astype(np.float64)
    v_mean, x_mean = v.mean(0), x.mean(0)
    v_std, x_std = v.std(0), x.std(0)
    vs = np.where(v_std > 1e-8, (v - v_mean) / np.where(v_std > 1e-8, v_std, 1), 0.0)
    xs = np.where(x_std > 1e-8, (x - x_mean) / np.where(x_std > 1e-8, x_std, 1), 0.0)
    n = len(v)
    source = np.zeros(x.shape[1], dtype=np.int64)
    corr_best = np.zeros(x.shape[1])
    for start in range(0, x.shape[1], chunk):
        corr = xs[:, start:start + chunk].T @ vs / n  # (chunk, Dv)
        best = np.abs(corr).argmax(1)
        source[start:start + chunk] = best
        corr_best[start:start + chunk] = corr[np.arange(len(best)), best]
    slope = np.where(v_std[source] > 1e-8, corr_best * x_std / np.where(
        v_std[source] > 1e-8, v_std[source], 1), 0.0)
    intercept = x_mean - slope * v_mean[source]
    return CorrespondenceInverter(source, slope, intercept, tuple(images.shape[1:]))
