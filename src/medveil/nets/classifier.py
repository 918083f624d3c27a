"""One small CNN that serves every image-shaped view from 28 to 128 pixels.

Every image-shaped scheme and the plaintext baseline are scored with this same
network and budget, so scorecard rows differ only by the view.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Normalisations the network takes: ``batch`` (the standard classifier) or ``group``
#: (GroupNorm: no running statistics and no cross-sample coupling, which per-sample
#: gradients need: Opacus refuses BatchNorm, and the federated classifier uses it).
NORMS = ("batch", "group")


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(math.gcd(groups, channels), channels)  # a divisor of channels


def _block(cin: int, cout: int, norm: str = "batch", groups: int = 8) -> nn.Sequential:
    # in-place ReLU only with BatchNorm: per-sample gradient hooks (Opacus) refuse an
    # in-place op on a hooked module's output
    inplace = norm == "batch"
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(norm, cout, groups),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(norm, cout, groups),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Four conv blocks (width, 2w, 4w, 8w), global average pooling, dropout, linear.

    Global pooling makes the head independent of the input size, so 28 px
    MedMNIST and 128 px chest X-rays use the same architecture. ``norm="group"`` (with
    ``groups`` groups per layer, or its largest divisor of the channels) is the
    federated classifier: the same network with GroupNorm for BatchNorm and ReLUs that
    are not in place.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16,
                 dropout: float = 0.2, norm: str = "batch", groups: int = 8) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "width": width,
                       "dropout": dropout}
        if norm != "batch":  # the standard classifier's record stays as it was
            self.config.update(norm=norm, groups=groups)
        w = width
        self.features = nn.Sequential(
            _block(in_channels, w, norm, groups), _block(w, 2 * w, norm, groups),
            _block(2 * w, 4 * w, norm, groups), _block(4 * w, 8 * w, norm, groups))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(8 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
