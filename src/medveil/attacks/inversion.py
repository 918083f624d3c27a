"""The inversion network every reconstruction attack trains: view -> plaintext.

For image-shaped views it is a MONAI U-Net whose input is the view plus a
learnable per-level intensity embedding (a lookup table over the quantised
view), added to a learnable per-level base estimate that starts at the
conditional mean of the plaintext given the view's intensity in the leaked
pairs. Any pixel-wise intensity remapping is thereby learnt directly rather
than approximated by ReLU pieces, and the U-Net learns what is left. For code
views (anything not shaped like an image) it is a fully connected +
transposed-convolution decoder. Trained with L1 + MSE, AdamW and a one-cycle
schedule for a fixed budget.

Very long code views (over ``max_dense_inputs`` values, e.g. PRIMIS codes of a
256x256 fundus image: 442,400 values) are first projected onto the span of the
attacker's own centred training views. Gradient descent only ever moves a
dense first layer inside that span, so the projection keeps everything the
attacker can learn from its pairs, drops only the untrained random part of the
layer, and makes the decoder affordable (a 442,400 x 512 dense layer is 226 M
weights and an hour of training per attacker on one core).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medveil.seeds import seeded


@dataclass
class InversionBudget:
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    levels: int = 256
    embed: int = 8
    channels: tuple[int, ...] = (16, 32, 64, 128)
    max_dense_inputs: int = 65536
    max_span: int = 512


class ImageInverter(nn.Module):
    """Learnable intensity lookup + U-Net, for views shaped like images."""

    def __init__(self, view_channels: int, out_channels: int, out_size: tuple[int, int],
                 budget: InversionBudget) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.levels, self.out_size = budget.levels, out_size
        self.lookup = nn.Embedding(budget.levels, budget.embed)
        in_channels = view_channels * (1 + budget.embed)
        depth = len(budget.channels)
        side = min(out_size)
        while depth > 2 and side % (2 ** (depth - 1)):
            depth -= 1
        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                         channels=budget.channels[:depth], strides=(2,) * (depth - 1),
                         num_res_units=1)
        self.pad = (2 ** (depth - 1))
        self.same_channels = view_channels == out_channels
        self.base = nn.Parameter(torch.zeros(view_channels, budget.levels))
        # ReZero-style gate: start as exactly the base estimate; the U-Net adds what it learns.
        self.gate = nn.Parameter(torch.zeros(1)) if self.same_channels else None

    def init_base(self, views: torch.Tensor, images: torch.Tensor) -> None:
        """Start the base lookup at E[plaintext | view level], estimated from the pairs."""
        if not self.same_channels or views.shape[-2:] != images.shape[-2:]:
            return
        default = torch.linspace(0, 1, self.levels)
        with torch.no_grad():
            for c in range(views.shape[1]):
                level = (views[:, c].clamp(0, 1) * (self.levels - 1)).round().long().flatten()
                target = images[:, c].flatten()
                total = torch.zeros(self.levels).index_add_(0, level, target)
                count = torch.zeros(self.levels).index_add_(0, level, torch.ones_like(target))
                mean = torch.where(count > 0, total / count.clamp(min=1), default)
                self.base[c] = torch.logit(mean.clamp(0.02, 0.98))

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        if view.shape[-2:] != self.out_size:
            view = F.interpolate(view, size=self.out_size, mode="bilinear", align_corners=False)
        level = (view.clamp(0, 1) * (self.levels - 1)).round().long()
        embedded = self.lookup(level)  # (N, C, H, W, E)
        n, c, h, w, e = embedded.shape
        embedded = embedded.permute(0, 1, 4, 2, 3).reshape(n, c * e, h, w)
        x = torch.cat([view, embedded], dim=1)
        ph, pw = (-h) % self.pad, (-w) % self.pad
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        residual = self.unet(x)[..., :h, :w]
        if self.same_channels:
            residual = self.gate * residual
            base = torch.stack([self.base[ch][level[:, ch]] for ch in range(c)], dim=1)
            return torch.sigmoid(base + residual)
        return torch.sigmoid(residual)


class SpanProjection(nn.Module):
    """Whitened coordinates of a view in the span of the training views (fixed, not trained)."""

    def __init__(self, views: torch.Tensor, max_span: int) -> None:
        super().__init__()
        flat = views.flatten(1).double()
        mean = flat.mean(0)
        centred = flat - mean
        # the n x n Gram matrix: cheap when the views are far longer than they are many
        values, vectors = torch.linalg.eigh(centred @ centred.T)
        keep = values > values.max().clamp(min=1e-12) * 1e-9
        values, vectors = values[keep].flip(0)[:max_span], vectors[:, keep].flip(1)[:, :max_span]
        singular = values.sqrt()
        basis = centred.T @ vectors / singular  # orthonormal columns spanning the views
        scale = singular / max(1, len(flat) - 1) ** 0.5  # unit variance on the training views
        self.register_buffer("mean", mean.float())
        self.register_buffer("basis", (basis / scale).float())

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        return (view.flatten(1).float() - self.mean) @ self.basis


class CodeDecoder(nn.Module):
    """Fully connected + transposed convolutions, for code views of any shape."""

    def __init__(self, view_dim: int, out_channels: int, out_size: tuple[int, int],
                 projection: SpanProjection | None = None) -> None:
        super().__init__()
        self.out_size = out_size
        self.projection = projection
        if projection is not None:
            view_dim = projection.dim
        h0, w0 = max(1, out_size[0] // 8), max(1, out_size[1] // 8)
        self.seed_shape = (128, h0, w0)
        self.fc = nn.Sequential(nn.Linear(view_dim, 512), nn.ReLU(), nn.Linear(512, 128 * h0 * w0))
        layers: list[nn.Module] = []
        cin = 128
        for cout in (64, 32, 16):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU()]
            cin = cout
        layers.append(nn.Conv2d(cin, out_channels, 3, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        flat = view.flatten(1).float() if self.projection is None else self.projection(view)
        x = self.fc(flat).view(-1, *self.seed_shape)
        x = self.deconv(x)
        x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


def is_image_view(view: np.ndarray) -> bool:
    return view.ndim == 4 and view.dtype == np.float32


def build_inverter(view_shape: tuple[int, ...], image_shape: tuple[int, int, int],
                   view_is_image: bool, budget: InversionBudget,
                   views: torch.Tensor | None = None) -> nn.Module:
    """The inverter for these shapes; ``views`` (the training views) enable the span projection."""
    c, h, w = image_shape
    if view_is_image:
        return ImageInverter(view_shape[0], c, (h, w), budget)
    view_dim = int(np.prod(view_shape))
    projection = None
    if views is not None and view_dim > budget.max_dense_inputs:
        projection = SpanProjection(views, budget.max_span)
    return CodeDecoder(view_dim, c, (h, w), projection)


def train_inverter(views: np.ndarray, images: np.ndarray, *, budget: InversionBudget,
                   seed: int) -> nn.Module:
    """Fit view -> image on the pairs given; deterministic from ``seed``."""
    image_view = is_image_view(views)
    with seeded(seed, "attacks/inversion/fit") as gen:
        v = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32))
        net = build_inverter(views.shape[1:], images.shape[1:], image_view, budget, views=v)
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        if isinstance(net, ImageInverter):
            net.init_base(v, x)
            lookup = [net.base, *net.lookup.parameters()]
            rest = [p for n, p in net.named_parameters() if not n.startswith(("base", "lookup"))]
            groups = [{"params": lookup, "lr": 10 * budget.lr}, {"params": rest, "lr": budget.lr}]
        else:
            groups = [{"params": list(net.parameters()), "lr": budget.lr}]
        optimiser = torch.optim.AdamW(groups, weight_decay=1e-5)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=[g["lr"] for g in groups], total_steps=budget.steps)
        net.train()
        for _ in range(budget.steps):
            idx = torch.randint(0, len(v), (min(budget.batch_size, len(v)),), generator=gen)
            out = net(v[idx])
            loss = F.l1_loss(out, x[idx]) + F.mse_loss(out, x[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        net.eval()
    return net


def invert(net: nn.Module, views: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(views), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(views[i:i + batch_size],
                                                          dtype=np.float32))
            out.append(net(chunk).numpy())
    return np.concatenate(out).astype(np.float32)
