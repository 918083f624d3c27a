"""PRIMIS's sparsifying auto-encoder: successive-refinement sparse ternary-like codes.

Each image is cut into ``patch`` x ``patch`` tiles. Per stage, a small
convolutional encoder (two 3x3/4x4 convolutions, one x2 downsampling) is
projected by a ``patch/2`` x ``patch/2`` convolution onto a code of
``code_dim`` coordinates; the code keeps its top-k positive and top-k negative
values and zeroes the rest (a sparse ternary-like code: a signed support with
real values). Stage ``l`` encodes the residual the stages before it left
(successive refinement); a mirrored decoder per stage adds its part to the
reconstruction. Small tiles keep the network light enough to train on two CPU
cores and let a few dozen coefficients per tile carry the anatomy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def sparsify(code: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the top-k positive and top-k negative values of each (flattened) code.

    Returns the sparse code and its support mask. Gradients flow through the kept
    values (the selection itself is not differentiated), as in k-sparse auto-encoders.
    """
    flat = code.flatten(1)
    k = min(k, flat.shape[1] // 2)
    pos = torch.topk(flat, k, dim=1).indices
    neg = torch.topk(-flat, k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, pos, True)
    mask.scatter_(1, neg, True)
    return (flat * mask).view_as(code), mask.view_as(code)


class _Stage(nn.Module):
    def __init__(self, patch: int, code_dim: int, width: int) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.1)
        half = patch // 2
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), act,
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), act,
            nn.Conv2d(2 * width, code_dim, half),  # projection: one code per tile
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(code_dim, 2 * width, half), act,
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), act,
            nn.Conv2d(width, 1, 3, padding=1),
        )


class SparseCodec(nn.Module):
    """``codes`` successive-refinement stages on ``patch`` x ``patch`` grey tiles."""

    def __init__(self, *, patch: int = 8, codes: int = 3, code_dim: int = 128, k: int = 6,
                 width: int = 32) -> None:
        super().__init__()
        if patch % 2 or patch < 4:
            raise ValueError(f"patch must be even and >= 4, got {patch}")
        self.config: dict[str, Any] = {"patch": patch, "codes": codes, "code_dim": code_dim,
                                       "k": k, "width": width}
        self.k = k
        self.stages = nn.ModuleList(_Stage(patch, code_dim, width) for _ in range(codes))

    @property
    def code_shape(self) -> tuple[int, int, int]:
        return self.config["code_dim"], 1, 1

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                               list[torch.Tensor]]:
        """Sparse codes, their supports, and the running reconstructions."""
        residual = x - 0.5
        recon = torch.zeros_like(x)
        codes, masks, recons = [], [], []
        for stage in self.stages:
            sparse, mask = sparsify(stage.encoder(residual), self.k)
            part = stage.decoder(sparse)
            recon = recon + part
            residual = residual - part
            codes.append(sparse)
            masks.append(mask)
            recons.append(recon + 0.5)
        return codes, masks, recons

    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        out = 0.5
        for stage, code in zip(self.stages, codes, strict=True):
            out = out + stage.decoder(code)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encode(x)[2]
