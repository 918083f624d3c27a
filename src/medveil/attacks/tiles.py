"""A per-tile known-plaintext inverter, for views whose layout is public.

When a view is a grid of per-patch codes or tokens (primis, privacy_sf) and the
attacker knows which entry belongs to which patch, every leaked (view, image)
pair becomes hundreds of (tile code, tile pixels) pairs: inverting one tile is
a far better-posed problem than inverting a whole view at once. The attacker
fits one MLP on all leaked tiles and applies it to the victims' tiles. A scheme
offers it to the shared :class:`~medveil.attacks.suite.Inverter` as a candidate
(``Scheme.attack_inverters``), so it also feeds re-identification.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from medveil.seeds import seeded


class TileInverter:
    """Tile code -> tile pixels, fitted on the leaked tiles by one MLP.

    Args:
        codes: (T, F) the leaked views' tile codes.
        pixels: (T, P) the leaked images' tiles, flattened.
        budget: the bench's ``AttackBudget``: five times its inversion steps, its rate.
        seed: the attack's randomness.
    """

    def __init__(self, codes: np.ndarray, pixels: np.ndarray, *, budget: Any,
                 seed: int) -> None:
        import torch
        from torch import nn

        codes = np.asarray(codes, dtype=np.float32)
        self.scale = float(np.abs(codes).mean()) or 1.0
        steps = 5 * budget.inversion.steps
        with seeded(seed, "attacks/tiles/fit") as gen:
            net = nn.Sequential(nn.Linear(2 * codes.shape[1], 512), nn.GELU(),
                                nn.Linear(512, 512), nn.GELU(),
                                nn.Linear(512, pixels.shape[1]))
            xt = torch.from_numpy(codes / self.scale)
            yt = torch.from_numpy(np.asarray(pixels, dtype=np.float32))
            optimiser = torch.optim.AdamW(net.parameters(), lr=budget.inversion.lr)
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimiser, max_lr=budget.inversion.lr, total_steps=steps)
            for _ in range(steps):
                batch = torch.randint(len(xt), (512,), generator=gen)
                guess = net(_features(xt[batch]))
                loss = torch.mean((guess - yt[batch]) ** 2) + 0.1 * torch.mean(
                    (guess - yt[batch]).abs())
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
        self.net = net.eval()

    def invert(self, codes: np.ndarray) -> np.ndarray:
        """(V, F) tile codes -> (V, P) predicted tiles (not clipped)."""
        import torch

        with torch.no_grad():
            victims = torch.from_numpy(np.asarray(codes, dtype=np.float32) / self.scale)
            return np.concatenate([self.net(_features(victims[i:i + 65536])).numpy()
                                   for i in range(0, len(victims), 65536)])


class TiledInverter:
    """Whole views -> images through a :class:`TileInverter`: a scheme's public layout
    says how a view splits into tile codes and how tiles tile an image."""

    def __init__(self, views: np.ndarray, images: np.ndarray, *,
                 to_codes: Callable[[np.ndarray], np.ndarray],
                 to_tiles: Callable[[np.ndarray], np.ndarray],
                 to_images: Callable[[np.ndarray], np.ndarray], budget: Any,
                 seed: int) -> None:
        tiles = to_tiles(np.asarray(images, dtype=np.float32))
        self.to_codes, self.to_images = to_codes, to_images
        self.tiles = TileInverter(to_codes(views), tiles.reshape(len(tiles), -1), budget=budget,
                                  seed=seed)

    def invert(self, views: np.ndarray) -> np.ndarray:
        return np.clip(self.to_images(self.tiles.invert(self.to_codes(views))), 0,
                       1).astype(np.float32)


def _features(v: Any) -> Any:
    import torch

    return torch.cat([v, v.abs()], dim=1)


def to_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """(N, C, H, W) with sides divisible by ``patch`` -> (N * L, C, patch, patch), raster."""
    n, c, h, w = images.shape
    grid = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return np.ascontiguousarray(grid.transpose(0, 2, 4, 1, 3, 5).reshape(-1, c, patch, patch))


def patches_to_images(tiles: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`to_patches`, clipped to [0, 1]."""
    c, h, w = image_shape
    p = tiles.shape[-1]
    grid = tiles.reshape(-1, h // p, w // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
    return np.clip(grid.reshape(-1, c, h, w), 0, 1).astype(np.float32)
