"""HE-friendly CNNs and their folding into square-activated linear layers.

The model owner trains these in plaintext with the standard training loop. Under
CKKS every multiplication costs a level of the modulus chain, so the trained
network is folded before encryption (Ran and Li 2025 fold batch normalisation and
use a degree-2 polynomial activation; the folding below is ours, named in
docs/schemes.md):

1. *BN folding*: each batch norm is absorbed into the convolution / linear layer
   before it (``W' = diag(g / s) W``, ``b' = g (b - m) / s + beta``): zero levels.
2. *Polynomial folding*: ``a z^2 + b z + c = (sqrt(a) z + b / (2 sqrt(a)))^2 + c - b^2/(4a)``;
   the affine part goes into the layer before, the constant into the bias of the
   layer after, so each activation costs exactly one ciphertext square.

A network is then ``first (conv) -> square -> hidden (dense) -> square -> final
(dense)``: five levels, which fits the 218-bit modulus budget of N = 8192.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medveil.errors import ConfigError

ARCHITECTURES = ("tutorial", "deep")


def _torch():
    import torch
    from torch import nn

    return torch, nn


def _poly_module():
    torch, nn = _torch()

    class PolyAct(nn.Module):
        """Per-channel ``a x^2 + b x + c`` with ``a > 0`` (so the square folding is real).

        Initialised at the least-squares fit of ReLU on [-2, 2] scaled down
        (0.125 x^2 + 0.5 x + 0.25), a common starting point for HE activations.
        """

        def __init__(self, channels: int, *, spatial: bool) -> None:
            super().__init__()
            shape = (1, channels, 1, 1) if spatial else (1, channels)
            self.raw_a = nn.Parameter(torch.full(shape, math.log(math.expm1(0.125))))
            self.b = nn.Parameter(torch.full(shape, 0.5))
            self.c = nn.Parameter(torch.full(shape, 0.25))

        @property
        def a(self):
            return nn.functional.softplus(self.raw_a) + 1e-3

        def forward(self, x):
            return self.a * x * x + self.b * x + self.c

    return PolyAct


@dataclass(frozen=True)
class ArchSpec:
    """Shape of an HE CNN: one patch convolution, one hidden linear layer, one output."""

    name: str
    image_size: int
    conv_channels: int
    conv_kernel: int
    conv_stride: int
    hidden: str  # "dense:<features>" or "conv:<channels>:<kernel>:<stride>"

    @property
    def conv_out(self) -> int:
        return (self.image_size - self.conv_kernel) // self.conv_stride + 1


def arch_spec(name: str, image_size: int) -> ArchSpec:
    """The two shipped architectures.

    ``tutorial`` is the TenSEAL MNIST tutorial network (conv 7x7 stride 3, 4 channels
    -> fc 64 -> fc), the reference point at 28x28. ``deep`` has two convolutions for
    64x64 chest X-rays: a 4x4 stride-4 patch convolution (8 channels; non-overlapping,
    so the client's packing holds each pixel once) then a 3x3 stride-2 convolution
    (8 channels) and the output layer.
    """
    if name == "tutorial":
        if image_size < 10:
            raise ConfigError(f"the tutorial network needs images of at least 10 px, "
                              f"got {image_size}")
        return ArchSpec("tutorial", image_size, 4, 7, 3, "dense:64")
    if name == "deep":
        if image_size % 4 or image_size < 16:
            raise ConfigError(f"the deep network needs a multiple of 4 px >= 16, got {image_size}")
        return ArchSpec("deep", image_size, 8, 4, 4, "conv:8:3:2")
    raise ConfigError(f"unknown HE architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")


def build_he_net(spec: ArchSpec, in_channels: int, num_classes: int):
    """The trainable torch network of ``spec`` (conv, BN, poly, ..., linear)."""
    torch, nn = _torch()
    if in_channels != 1:
        raise ConfigError("the CKKS networks take single-channel (grey) images; "
                          "load the data with --color gray")
    poly = _poly_module()
    n = spec.conv_out
    layers: list[Any] = [nn.Conv2d(1, spec.conv_channels, spec.conv_kernel,
                                   stride=spec.conv_stride),
                         nn.BatchNorm2d(spec.conv_channels), poly(spec.conv_channels, spatial=True)]
    kind, *rest = spec.hidden.split(":")
    if kind == "dense":
        features = int(rest[0])
        layers += [nn.Flatten(), nn.Linear(spec.conv_channels * n * n, features),
                   nn.BatchNorm1d(features), poly(features, spatial=False)]
    else:
        channels, kernel, stride = (int(v) for v in rest)
        m = (n - kernel) // stride + 1
        layers += [nn.Conv2d(spec.conv_channels, channels, kernel, stride=stride),
                   nn.BatchNorm2d(channels), poly(channels, spatial=True), nn.Flatten()]
        features = channels * m * m
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


@dataclass
class FoldedNet:
    """``first -> square -> hidden -> square -> final``, float64, ready for packing.

    ``first_weight`` is ``(C, k, k)`` (one input channel), applied with ``stride``;
    the hidden and final layers are dense matrices over the torch flatten order
    (channel, row, column). ``output_scale`` multiplies the final layer so the
    logits stay well inside the last prime's range; divide it back after decrypting.
    """

    image_size: int
    stride: int
    first_weight: np.ndarray
    first_bias: np.ndarray
    hidden_weight: np.ndarray
    hidden_bias: np.ndarray
    final_weight: np.ndarray
    final_bias: np.ndarray
    output_scale: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kernel(self) -> int:
        return int(self.first_weight.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.first_weight.shape[0])

    @property
    def conv_out(self) -> int:
        return (self.image_size - self.kernel) // self.stride + 1

    @property
    def num_classes(self) -> int:
        return int(self.final_weight.shape[0])

    def im2col(self, image: np.ndarray) -> np.ndarray:
        """``(positions, k*k)`` windows of one ``(H, W)`` image, row-major positions."""
        k, s, n = self.kernel, self.stride, self.conv_out
        rows = (np.arange(n) * s)[:, None, None, None] + np.arange(k)[None, None, :, None]
        cols = (np.arange(n) * s)[None, :, None, None] + np.arange(k)[None, None, None, :]
        return image[rows, cols].reshape(n * n, k * k)

    def forward(self, images: np.ndarray) -> np.ndarray:
        """Plaintext float64 logits of ``(N, 1, H, W)`` or ``(N, H, W)`` images."""
        images = np.asarray(images, dtype=np.float64).reshape(len(images), self.image_size,
                                                                 self.image_size)
        w = self.first_weight.reshape(self.channels, -1)
        out = []
        for image in images:
            conv = (self.im2col(image) @ w.T).T + self.first_bias[:, None]  # (C, P)
            h = (self.hidden_weight @ (conv.reshape(-1) ** 2) + self.hidden_bias) ** 2
            out.append(self.final_weight @ h + self.final_bias)
        return np.stack(out) / self.output_scale

    def state(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self.__dict__.items()}


def _bn_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """BN in eval mode as ``scale * z + shift``."""
    std = np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    scale = gamma / std
    return scale, beta - bn.running_mean.detach().double().numpy() * scale


def _poly_affine(poly) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sqrt(a), b / (2 sqrt(a)), c - b^2 / (4a))`` per channel."""
    a = poly.a.detach().double().numpy().reshape(-1)
    b = poly.b.detach().double().numpy().reshape(-1)
    c = poly.c.detach().double().numpy().reshape(-1)
    root = np.sqrt(a)
    return root, b / (2 * root), c - b * b / (4 * a)


def _dense_matrix(layer, in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and bias of a conv / linear layer over flattened inputs."""
    torch, _ = _torch()
    n_in = int(np.prod(in_shape))
    with torch.no_grad():
        basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
        layer = layer.double()
        zero = layer(torch.zeros(1, *in_shape, dtype=torch.float64)).reshape(-1)
        columns = layer(basis).reshape(n_in, -1) - zero
        layer.float()
    return columns.T.numpy().copy(), zero.numpy().copy()


def fold_network(net, spec: ArchSpec, *, calibration: np.ndarray | None = None,
                 logit_bound: float = 8.0) -> FoldedNet:
    """Fold BN and the polynomials of a trained ``build_he_net`` network.

    Args:
        calibration: plaintext images used to pick ``output_scale`` (a power of two
            that keeps the largest logit below ``logit_bound``): the last prime has
            33 bits and the scale 27, so decrypted values must stay well below 32.
    """
    net = net.eval()
    conv, bn1, poly1 = net[0], net[1], net[2]
    s1, t1 = _bn_affine(bn1)
    r1, u1, k1 = _poly_affine(poly1)
    w = conv.weight.detach().double().numpy()[:, 0]  # (C, k, k)
    b = conv.bias.detach().double().numpy()
    first_weight = w * (s1 * r1)[:, None, None]
    first_bias = (b * s1 + t1) * r1 + u1
    n = spec.conv_out
    channels = spec.conv_channels
    kind = spec.hidden.split(":")[0]
    if kind == "dense":
        lin, bn2, poly2, final = net[4], net[5], net[6], net[7]
        hw, hb = _dense_matrix(lin, (channels * n * n,))
    else:
        lin, bn2, poly2, final = net[3], net[4], net[5], net[7]
        hw, hb = _dense_matrix(lin, (channels, n, n))
    hb = hb + hw @ np.repeat(k1, n * n)  # the first polynomial's constant
    s2, t2 = _bn_affine(bn2)
    r2, u2, k2 = _poly_affine(poly2)
    per_out = hw.shape[0] // len(s2)  # conv: channels x positions; dense: 1
    scale2 = np.repeat(s2 * r2, per_out)
    hidden_weight = hw * scale2[:, None]
    hidden_bias = (hb * np.repeat(s2, per_out) + np.repeat(t2, per_out)) * np.repeat(r2, per_out) \
        + np.repeat(u2, per_out)
    fw = final.weight.detach().double().numpy()
    fb = final.bias.detach().double().numpy() + fw @ np.repeat(k2, per_out)
    folded = FoldedNet(image_size=spec.image_size, stride=spec.conv_stride,
                       first_weight=first_weight, first_bias=first_bias,
                       hidden_weight=hidden_weight, hidden_bias=hidden_bias,
                       final_weight=fw, final_bias=fb, meta={"architecture": spec.name})
    if calibration is not None and len(calibration):
        peak = float(np.abs(folded.forward(calibration)).max())
        exponent = max(0, math.ceil(math.log2(max(peak, 1e-12) / logit_bound)))
        folded.output_scale = 2.0 ** -exponent
        folded.final_weight = fw * folded.output_scale
        folded.final_bias = fb * folded.output_scale
        folded.meta["calibration_peak_logit"] = peak
    return folded
