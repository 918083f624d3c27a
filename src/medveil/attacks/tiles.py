"""A per-tile known-plaintext inverter, for views whose layout is public.

When a view is a grid of per-patch codes or tokens (primis, privacy_sf) and the
attacker knows which entry belongs to which patch, every leaked (view, image)
pair becomes hundreds of (tile code, tile pixels) pairs: inverting one tile is
a far better-posed problem than inverting a whole view at once. The attacker
fits one MLP on all leaked tiles and applies it to the victims' tiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def invert_tiles(codes: np.ndarray, pixels: np.ndarray, victims: np.ndarray, *, budget: Any,
                 seed: int) -> np.ndarray:
    """Fit tile code -> tile pixels on the leaked tiles; predict the victims' tiles.

    Args:
        codes: (T, F) the leaked views' tile codes.
        pixels: (T, P) the leaked images' tiles, flattened.
        victims: (V, F) the victims' tile codes.
        budget: the bench's ``AttackBudget``: five times its inversion steps, its rate.
        seed: the attack's randomness.

    Returns:
        (V, P) predicted tiles (not clipped).
    """
    import torch
    from torch import nn

    codes = np.asarray(codes, dtype=np.float32)
    scale = float(np.abs(codes).mean()) or 1.0
    steps = 5 * budget.inversion.steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 23)
        gen = torch.Generator().manual_seed(seed + 29)
        net = nn.Sequential(nn.Linear(2 * codes.shape[1], 512), nn.GELU(), nn.Linear(512, 512),
                            nn.GELU(), nn.Linear(512, pixels.shape[1]))
        xt = torch.from_numpy(codes / scale)
        yt = torch.from_numpy(np.asarray(pixels, dtype=np.float32))

        def features(v: torch.Tensor) -> torch.Tensor:
            return torch.cat([v, v.abs()], dim=1)

        optimiser = torch.optim.AdamW(net.parameters(), lr=budget.inversion.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=budget.inversion.lr, total_steps=steps)
        for _ in range(steps):
            batch = torch.randint(len(xt), (512,), generator=gen)
            guess = net(features(xt[batch]))
            loss = torch.mean((guess - yt[batch]) ** 2) + 0.1 * torch.mean(
                (guess - yt[batch]).abs())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        with torch.no_grad():
            victims_t = torch.from_numpy(np.asarray(victims, dtype=np.float32) / scale)
            return np.concatenate([net(features(victims_t[i:i + 65536])).numpy()
                                   for i in range(0, len(victims_t), 65536)])


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
