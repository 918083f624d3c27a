"""Privacy-SF's networks: patch-token encoders, the mask decoder, the server's mapping.

Client side: an image encoder and a mask encoder turn each ``patch x patch``
patch into one token (a ``dim``-vector), so an image is a sequence of tokens in
raster order; the mask decoder turns mask tokens back into per-pixel logits.
Server side: the mapping network turns a sequence of image tokens into a
sequence of mask tokens. It sees the sequence laid out on its token grid (the
layout is public: token ``i`` is patch ``i``), one learned adapter per centre
in front and behind, and a shared trunk of dilated residual convolutions in
between. Everything is small on purpose: a client on two CPU cores fits it.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchTokenEncoder(nn.Module):
    """(N, C, H, W) -> (N, L, dim) in (-1, 1): one token per ``patch x patch`` patch.

    The tanh bounds the token space: unbounded tokens drift to a scale of tens, and
    regressing them (the server's whole job) becomes ill-conditioned.
    """

    def __init__(self, channels: int, dim: int, *, patch: int, width: int = 32) -> None:
        super().__init__()
        self.config = {"channels": channels, "dim": dim, "patch": patch, "width": width}
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, patch, stride=patch), nn.GELU(),
            nn.Conv2d(width, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x)).flatten(2).transpose(1, 2)


class MaskTokenDecoder(nn.Module):
    """(N, L, dim) on a ``grid`` -> (N, 1, H, W) mask logits."""

    def __init__(self, dim: int, *, patch: int, width: int = 32) -> None:
        super().__init__()
        self.config = {"dim": dim, "patch": patch, "width": width}
        self.net = nn.Sequential(
            nn.Conv2d(dim, width, 3, padding=1), nn.GELU(),
            nn.ConvTranspose2d(width, width, patch, stride=patch), nn.GELU(),
            nn.Conv2d(width, 1, 3, padding=1),
        )

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.net(tokens_to_grid(tokens, grid))


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, L, D) in raster order -> (N, D, gh, gw)."""
    n, length, dim = tokens.shape
    if length != grid[0] * grid[1]:
        raise ValueError(f"{length} tokens do not fill a {grid[0]}x{grid[1]} grid")
    return tokens.transpose(1, 2).reshape(n, dim, *grid)


class _Block(nn.Module):
    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, width), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(8, width), nn.GELU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MappingNetwork(nn.Module):
    """Server side: encoded image tokens -> encoded mask tokens, for ``centres`` clients.

    Each centre's tokens arrive under that centre's own secret orthogonal
    transform, so each centre gets its own input and output adapter (a linear map
    per token, which can absorb a rotation but learns nothing about pixels) and all
    centres share the trunk.
    """

    def __init__(self, image_dim: int, mask_dim: int, *, centres: int = 1, width: int = 64,
                 blocks: int = 4) -> None:
        super().__init__()
        self.config = {"image_dim": image_dim, "mask_dim": mask_dim, "centres": centres,
                       "width": width, "blocks": blocks}
        self.inputs = nn.ModuleList(nn.Conv2d(image_dim, width, 1) for _ in range(centres))
        self.trunk = nn.Sequential(*[_Block(width, 2 ** (i % 3)) for i in range(blocks)],
                                   nn.GroupNorm(8, width), nn.GELU())
        self.outputs = nn.ModuleList(nn.Conv2d(width, mask_dim, 1) for _ in range(centres))

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], centre: int = 0
                ) -> torch.Tensor:
        x = self.trunk(self.inputs[centre](tokens_to_grid(tokens, grid)))
        return self.outputs[centre](x).flatten(2).transpose(1, 2)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:  # noqa: ANN001
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward, gradient times ``-weight`` backward: the encoder works against
    the adversary that learns to invert its tokens."""
    return _ReverseGradient.apply(x, weight)
