"""Re-identification: match each protected view to its plaintext in a gallery.

The attacker holds a gallery of N plaintext images that contains the victims'
originals, and the leaked (plaintext, view) pairs. Two rankings are computed
and the stronger is reported (a weak attack must never make a scheme look
safe): pixel distance between the inverted view and each gallery image, and a
Siamese embedding (one shared CNN for the inverted view and the plaintext)
trained with a contrastive InfoNCE loss on the leaked pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


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


def _topk(similarity: np.ndarray) -> tuple[float, float]:
    """Top-1 / top-5 hit rates; query i's true match is gallery item i."""
    order = np.argsort(-similarity, axis=1)
    truth = np.arange(len(similarity))[:, None]
    top1 = float((order[:, :1] == truth).any(1).mean())
    return top1, float((order[:, :5] == truth).any(1).mean())


def train_embedder(queries: np.ndarray, plaintexts: np.ndarray, *, budget: ReidBudget,
                   seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        net = _Embedder(plaintexts.shape[1])
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        p = torch.from_numpy(np.ascontiguousarray(plaintexts, dtype=np.float32))
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


def reidentify(inverted_queries: np.ndarray, gallery: np.ndarray, *,
               leaked_inverted: np.ndarray, leaked_plain: np.ndarray, budget: ReidBudget,
               seed: int) -> dict[str, float | int | str]:
    """Rank the gallery for each inverted query view; report the stronger method."""
    n = len(gallery)
    flat_q = inverted_queries.reshape(n, -1).astype(np.float64)
    flat_g = gallery.reshape(n, -1).astype(np.float64)
    distance = ((flat_q[:, None, :] - flat_g[None, :, :]) ** 2).mean(-1)
    pixel_top1, pixel_top5 = _topk(-distance)
    net = train_embedder(leaked_inverted, leaked_plain, budget=budget, seed=seed)
    with torch.no_grad():
        eq = net(torch.from_numpy(np.ascontiguousarray(inverted_queries))).numpy()
        eg = net(torch.from_numpy(np.ascontiguousarray(gallery))).numpy()
    siamese_top1, siamese_top5 = _topk(eq @ eg.T)
    if (siamese_top1, siamese_top5) >= (pixel_top1, pixel_top5):
        top1, top5, method = siamese_top1, siamese_top5, "siamese"
    else:
        top1, top5, method = pixel_top1, pixel_top5, "pixel"
    return {"top1": top1, "top5": top5, "chance": 1.0 / n, "gallery": n, "method": method,
            "pixel_top1": pixel_top1, "siamese_top1": siamese_top1}
