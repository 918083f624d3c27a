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

A network is then ``first (conv) -> square -> hidden (dense) -> square ->
[middle (dense) -> square]* -> final (dense)``: every linear map between two
activations (convolutions, batch norms, average pooling) is one dense matrix.
Five levels without middle layers, which fits the 218-bit modulus budget of
N = 8192; each middle layer adds two (N = 16384 then, see
:func:`medveil.he.ckks.CKKSParameters.for_depth`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medveil.errors import ConfigError

ARCHITECTURES = ("tutorial", "lola", "deep", "wide", "wide_pool")


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
    """Shape of an HE CNN: a patch convolution, then stages, then the output layer.

    Each stage is a linear map (ops joined by ``+``: ``conv:C:k:s[:pad]``,
    ``dense:F``, ``pool:k``; a batch norm follows every conv and dense op) and one
    polynomial activation; ``head`` holds the linear ops before the output layer.
    Under CKKS each stage costs two levels (its products and its square), so the
    depth is ``3 + 2 * len(stages)``.
    """

    name: str
    image_size: int
    conv_channels: int
    conv_kernel: int
    conv_stride: int
    stages: tuple[str, ...]
    head: str = ""

    @property
    def conv_out(self) -> int:
        return (self.image_size - self.conv_kernel) // self.conv_stride + 1

    @property
    def depth(self) -> int:
        """Multiplicative levels of the folded network under CKKS."""
        return 3 + 2 * len(self.stages)


def arch_spec(name: str, image_size: int) -> ArchSpec:
    """The shipped architectures.

    ``tutorial`` is the TenSEAL MNIST tutorial network (conv 7x7 stride 3, 4 channels
    -> fc 64 -> fc), the reference point at 28x28; ``lola`` is the LoLa shape of
    Orion's model zoo (conv 2x2 stride 2, 5 channels -> fc 100 -> fc), for the
    side-by-side benchmark. ``deep`` has two convolutions for
    64x64 chest X-rays: a 4x4 stride-4 patch convolution (8 channels; non-overlapping,
    so the client's packing holds each pixel once) then a 3x3 stride-2 convolution
    (8 channels) and the output layer (5 levels). ``wide`` is one stage deeper and
    wider (7 levels): the patch convolution (16 channels; 8x8 stride 8 at 128 px, so
    the positions stay 16x16), a 3x3 convolution to 32 channels with its 2x2 average
    pooling folded into the same linear map, a 64-feature dense stage, the output.
    ``wide_pool`` is ``wide`` with the pooling after the activation (the usual CNN
    order: convolution, activation, pooling), folded into the dense layer that
    follows: its 3x3 convolution is then a layer of its own, which the packing
    evaluates in place (``packing._choose_block``: block 1, 23 rotations instead of
    the pooled convolution's 39).
    """
    if name == "tutorial":
        if image_size < 10:
            raise ConfigError(f"the tutorial network needs images of at least 10 px, "
                              f"got {image_size}")
        return ArchSpec("tutorial", image_size, 4, 7, 3, ("dense:64",))
    if name == "lola":
        if image_size % 2 or image_size < 8:
            raise ConfigError(f"the lola network needs an even size >= 8 px, got {image_size}")
        return ArchSpec("lola", image_size, 5, 2, 2, ("dense:100",))
    if name == "deep":
        if image_size % 4 or image_size < 16:
            raise ConfigError(f"the deep network needs a multiple of 4 px >= 16, got {image_size}")
        return ArchSpec("deep", image_size, 8, 4, 4, ("conv:8:3:2",))
    if name == "wide":
        if image_size % 16 or image_size < 32:
            raise ConfigError(f"the wide network needs a multiple of 16 px >= 32, got {image_size}")
        patch = image_size // 16
        return ArchSpec("wide", image_size, 16, patch, patch,
                        ("conv:32:3:1:1+pool:2", "dense:64"))
    if name == "wide_pool":
        if image_size % 16 or image_size < 32:
            raise ConfigError(f"the wide_pool network needs a multiple of 16 px >= 32, "
                              f"got {image_size}")
        patch = image_size // 16
        return ArchSpec("wide_pool", image_size, 16, patch, patch,
                        ("conv:32:3:1:1", "pool:2+dense:64"))
    raise ConfigError(f"unknown HE architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")


def _linear_ops(text: str, channels: int, side: int, nn) -> tuple[list[Any], int, int]:
    """Torch modules of one ``+``-joined op list; returns them and the output shape
    (channels, side; side 0 once flattened)."""
    layers: list[Any] = []
    for op in filter(None, text.split("+")):
        kind, *rest = op.split(":")
        values = [int(v) for v in rest]
        if kind == "conv":
            out, kernel, stride = values[:3]
            pad = values[3] if len(values) > 3 else 0
            layers += [nn.Conv2d(channels, out, kernel, stride=stride, padding=pad),
                       nn.BatchNorm2d(out)]
            channels, side = out, (side + 2 * pad - kernel) // stride + 1
        elif kind == "pool":
            layers.append(nn.AvgPool2d(values[0]))
            side //= values[0]
        elif kind == "dense":
            if side:
                layers.append(nn.Flatten())
            layers += [nn.Linear(channels * max(side, 1) ** 2, values[0]),
                       nn.BatchNorm1d(values[0])]
            channels, side = values[0], 0
        else:
            raise ConfigError(f"unknown HE layer {op!r}: use conv, pool or dense")
    return layers, channels, side


def build_he_net(spec: ArchSpec, in_channels: int, num_classes: int):
    """The trainable torch network of ``spec`` (conv, BN, poly, ..., linear)."""
    torch, nn = _torch()
    if in_channels != 1:
        raise ConfigError("the CKKS networks take single-channel (grey) images; "
                          "load the data with --color gray")
    poly = _poly_module()
    layers: list[Any] = [nn.Conv2d(1, spec.conv_channels, spec.conv_kernel,
                                   stride=spec.conv_stride),
                         nn.BatchNorm2d(spec.conv_channels), poly(spec.conv_channels, spatial=True)]
    channels, side = spec.conv_channels, spec.conv_out
    for stage in spec.stages:
        ops, channels, side = _linear_ops(stage, channels, side, nn)
        layers += ops + [poly(channels, spatial=bool(side))]
    ops, channels, side = _linear_ops(spec.head, channels, side, nn)
    if side:
        ops.append(nn.Flatten())
    layers += ops + [nn.Linear(channels * max(side, 1) ** 2, num_classes)]
    return nn.Sequential(*layers)


@dataclass
class FoldedNet:
    """``first -> square -> hidden -> square -> [middle -> square]* -> final``, float64.

    ``first_weight`` is ``(C, k, k)`` (one input channel), applied with ``stride``;
    the hidden, middle and final layers are dense matrices over the torch flatten
    order (channel, row, column); ``middle`` is a list of ``(weight, bias)``.
    ``output_scale`` multiplies the final layer so the logits stay well inside the
    first prime's range; divide it back after decrypting.
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
    middle: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """Multiplicative levels under CKKS."""
        return 5 + 2 * len(self.middle)

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
            for weight, bias in self.middle:
                h = (weight @ h + bias) ** 2
            out.append(self.final_weight @ h + self.final_bias)
        return np.stack(out) / self.output_scale

    def state(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self.__dict__.items() if k != "middle"} | {
            "middle": [[w.tolist(), b.tolist()] for w, b in self.middle]}


def _bn_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """BN in eval mode as ``scale * z + shift``."""
    std = np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    scale = gamma / std
    return scale, beta - bn.running_mean.detach().double().numpy() * scale


def _poly_affine(poly, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sqrt(a), b / (2 sqrt(a)), c - b^2 / (4a))`` per feature of ``shape``."""
    def per_feature(value) -> np.ndarray:
        value = value.detach().double().numpy()
        return np.broadcast_to(value, (1, *shape)).reshape(-1).copy()

    a, b, c = per_feature(poly.a), per_feature(poly.b), per_feature(poly.c)
    root = np.sqrt(a)
    return root, b / (2 * root), c - b * b / (4 * a)


def _affine_matrix(layers: list[Any], in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and bias of a chain of linear layers (eval mode) over flat inputs."""
    torch, nn = _torch()
    chain = nn.Sequential(*layers).eval().double()
    n_in = int(np.prod(in_shape))
    with torch.no_grad():
        zero = chain(torch.zeros(1, *in_shape, dtype=torch.float64)).reshape(-1)
        columns = chain(torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape))
        columns = columns.reshape(n_in, -1) - zero
    chain.float()
    return columns.T.numpy().copy(), zero.numpy().copy()


def _split_at_activations(net) -> tuple[list[list[Any]], list[Any]]:
    """The network's linear groups and the activations between them."""
    groups: list[list[Any]] = [[]]
    activations = []
    for layer in net:
        if type(layer).__name__ == "PolyAct":
            activations.append(layer)
            groups.append([])
        else:
            groups[-1].append(layer)
    return groups, activations


def fold_network(net, spec: ArchSpec, *, calibration: np.ndarray | None = None,
                 logit_bound: float = 8.0) -> FoldedNet:
    """Fold BN and the polynomials of a trained ``build_he_net`` network.

    Every linear group between two activations becomes one dense matrix (its
    response to the unit basis); the activation ``a z^2 + b z + c`` puts
    ``sqrt(a)`` and ``b / (2 sqrt(a))`` into the group before it and ``c`` into
    the bias of the group after it.

    Args:
        calibration: plaintext images used to pick ``output_scale`` (a power of two
            that keeps the largest logit below ``logit_bound``): the first prime has
            headroom of a few bits over the scale, so decrypted values must stay small.
    """
    torch, _ = _torch()
    net = net.eval()
    groups, activations = _split_at_activations(net)
    conv, bn1 = groups[0]
    n = spec.conv_out
    shapes = []  # the input shape of every group after the first
    with torch.no_grad():
        x = torch.zeros(1, 1, spec.image_size, spec.image_size)
        for group, act in zip(groups, [*activations, None], strict=True):
            for layer in group:
                x = layer(x)
            if act is not None:
                shapes.append(tuple(x.shape[1:]))
    r, u, k = _poly_affine(activations[0], (spec.conv_channels, 1, 1))
    s1, t1 = _bn_affine(bn1)
    w = conv.weight.detach().double().numpy()[:, 0]  # (C, k, k)
    b = conv.bias.detach().double().numpy()
    first_weight = w * (s1 * r)[:, None, None]
    first_bias = (b * s1 + t1) * r + u
    constant = np.repeat(k, n * n)  # the previous activation's constant, per input feature
    dense = []
    for i, group in enumerate(groups[1:]):
        weight, bias = _affine_matrix(group, shapes[i])
        bias = bias + weight @ constant
        if i + 1 < len(activations):
            r, u, constant = _poly_affine(activations[i + 1], shapes[i + 1])
            weight, bias = weight * r[:, None], bias * r + u
        dense.append((weight, bias))
    (hw, hb), *middle, (fw, fb) = dense
    folded = FoldedNet(image_size=spec.image_size, stride=spec.conv_stride,
                       first_weight=first_weight, first_bias=first_bias,
                       hidden_weight=hw, hidden_bias=hb, final_weight=fw, final_bias=fb,
                       meta={"architecture": spec.name}, middle=middle)
    if calibration is not None and len(calibration):
        peak = float(np.abs(folded.forward(calibration)).max())
        exponent = max(0, math.ceil(math.log2(max(peak, 1e-12) / logit_bound)))
        folded.output_scale = 2.0 ** -exponent
        folded.final_weight = fw * folded.output_scale
        folded.final_bias = fb * folded.output_scale
        folded.meta["calibration_peak_logit"] = peak
    return folded
