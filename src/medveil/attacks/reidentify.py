"""Re-identification: match each protected view to its plaintext in a gallery.

The attacker holds a gallery of plaintext images that contains the victims'
originals and distractors of the same modality it never saw, and the leaked
(plaintext, view) pairs. Four rankings are computed and the strongest is
reported (a weak attack must never make a scheme look safe): pixel distance
between the inverted view and each gallery image, their correlation with the
sign ignored (contrast-invariant), the same correlation at vessel scale (each
set's mean image removed, then a difference of Gaussians: what a retinal
biometric matcher compares), and a Siamese embedding (one shared CNN for the
inverted view and the plaintext) trained with a contrastive InfoNCE loss on
the leaked pairs. Chance is one over the whole gallery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medveil.seeds import seeded


@dataclass
class ReidBudget:
    steps: int = 200
    batch_size: int = 64
    lr: float = 2e-3
    temperature: float = 0.1


class _Embedder(nn.Module):
    def __init__(self, channels: int, dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for cout in (32, 64, 128, 128):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.project = nn.Linear(cin * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.features(x)), dim=1)


def topk(similarity: np.ndarray) -> tuple[float, float]:
    """Top-1 / top-5 hit rates; query i's true match is gallery item i (the gallery may
    hold more items than there are queries)."""
    order = np.argsort(-similarity, axis=1)
    truth = np.arange(len(similarity))[:, None]
    top1 = float((order[:, :1] == truth).any(1).mean())
    return top1, float((order[:, :5] == truth).any(1).mean())


def fine_structure(images: np.ndarray) -> np.ndarray:
    """Each image's fine structure: the set's mean image removed (what every image
    shares, e.g. a fundus's field of view), channels averaged, then a difference of
    Gaussians at sigma ``side / 128`` (at least 0.5 px) and four times that: vessels,
    edges and texture, without the brightness and contrast a view may have changed."""
    from scipy.ndimage import gaussian_filter

    grey = np.asarray(images, dtype=np.float64).mean(axis=1)
    grey = grey - grey.mean(axis=0, keepdims=True)
    low = max(0.5, grey.shape[-1] / 128)
    return (gaussian_filter(grey, (0, low, low)) - gaussian_filter(grey, (0, 4 * low, 4 * low))
            )[:, None].astype(np.float32)


def rank_scores(queries: np.ndarray, gallery: np.ndarray) -> dict[str, tuple[float, float]]:
    """Top-1 / top-5 of the training-free rankings: correlation with the sign ignored, of
    the pictures and of their fine structure (:func:`fine_structure`)."""
    from medveil.metrics import standardized

    return {"correlation": topk(np.abs(standardized(queries) @ standardized(gallery).T)),
            "fine_structure": topk(np.abs(standardized(fine_structure(queries))
                                          @ standardized(fine_structure(gallery)).T))}


def _channels_last(images: np.ndarray) -> torch.Tensor:
    """A float32 batch in channels-last memory order: the embedder's convolutions run
    a fifth to a third faster on this CPU's oneDNN kernels (the same operations, summed
    in another order: docs/benchmarks.md)."""
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).contiguous(
        memory_format=torch.channels_last)


def train_embedder(queries: np.ndarray, plaintexts: np.ndarray, *, budget: ReidBudget,
                   seed: int) -> nn.Module:
    with seeded(seed, "attacks/reidentify/embedder") as gen:
        net = _Embedder(plaintexts.shape[1]).to(memory_format=torch.channels_last)
        q, p = _channels_last(queries), _channels_last(plaintexts)
        optimiser = torch.optim.AdamW(net.parameters(), lr=budget.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=budget.lr,
                                                       total_steps=budget.steps)
        net.train()
        batch = min(budget.batch_size, len(q))
        for _ in range(budget.steps):
            idx = torch.randperm(len(q), generator=gen)[:batch]
            a, b = net(q[idx]), net(p[idx])
            logits = a @ b.T / budget.temperature
            target = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        net.eval()
    return net


def reidentify(inverted_queries: np.ndarray, plaintexts: np.ndarray, *,
               distractors: np.ndarray | None = None, leaked_inverted: np.ndarray,
               leaked_plain: np.ndarray, budget: ReidBudget, seed: int
               ) -> dict[str, float | int | str]:
    """Rank the gallery (``plaintexts`` then ``distractors``) for each inverted query
    view; query i's match is ``plaintexts[i]``. Reports the strongest method."""
    gallery = plaintexts if distractors is None or not len(distractors) else \
        np.concatenate([plaintexts, np.asarray(distractors, dtype=plaintexts.dtype)])
    flat_q = inverted_queries.reshape(len(inverted_queries), -1).astype(np.float64)
    flat_g = gallery.reshape(len(gallery), -1).astype(np.float64)
    # squared distance without the (queries x gallery x pixels) array
    distance = (flat_q ** 2).sum(1)[:, None] + (flat_g ** 2).sum(1)[None, :] - 2 * flat_q @ flat_g.T
    scores = {"pixel": topk(-distance), **rank_scores(inverted_queries, gallery)}
    net = train_embedder(leaked_inverted, leaked_plain, budget=budget, seed=seed)
    with torch.no_grad():
        eq = net(_channels_last(inverted_queries)).numpy()
        eg = np.concatenate([net(_channels_last(gallery[i:i + 256])).numpy()
                             for i in range(0, len(gallery), 256)])
    scores["siamese"] = topk(eq @ eg.T)
    method = max(scores, key=lambda m: scores[m])
    top1, top5 = scores[method]
    return {"top1": top1, "top5": top5, "chance": 1.0 / len(gallery), "gallery": len(gallery),
            "queries": len(inverted_queries), "method": method,
            **{f"{name}_top1": value[0] for name, value in scores.items()}}
