"""One small CNN that serves every image-shaped view from 28 to 128 pixels.

Every image-shaped scheme and the plaintext baseline are scored with this same
network and budget, so scorecard rows differ only by the view.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Four conv blocks (width, 2w, 4w, 8w), global average pooling, dropout, linear.

    Global pooling makes the head independent of the input size, so 28 px
    MedMNIST and 128 px chest X-rays use the same architecture.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "width": width,
                       "dropout": dropout}
        w = width
        self.features = nn.Sequential(_block(in_channels, w), _block(w, 2 * w),
                                      _block(2 * w, 4 * w), _block(4 * w, 8 * w))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(8 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
