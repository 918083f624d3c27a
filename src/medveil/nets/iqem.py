"""FESF's Image Quality Enhancement Module: a residual generator and a patch critic.

The generator adds a bounded correction to a surrogate (so it starts as the
identity and can only move the image so far); the critic is a small PatchGAN
that scores local patches as host-like or not. Both are deliberately small:
they are fitted by the owner on two CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SurrogateGenerator(nn.Module):
    """``x + 0.5 * tanh(f(x))``, clamped to [0, 1]: a correction, not a new image."""

    def __init__(self, channels: int = 1, *, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.config = {"channels": channels, "width": width, "blocks": blocks}
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2),
                                  *[_Residual(width) for _ in range(blocks)],
                                  nn.Conv2d(width, channels, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + 0.5 * torch.tanh(self.body(x)), 0.0, 1.0)


class PatchCritic(nn.Module):
    """Scores overlapping patches (receptive field about 16 px) as host-like (1) or not (0)."""

    def __init__(self, channels: int = 1, *, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
