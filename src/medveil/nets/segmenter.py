"""The segmenter every image-shaped view is scored with: a MONAI U-Net."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_unet(*, in_channels: int = 1, out_channels: int = 1,
               channels: tuple[int, ...] = (16, 32, 64, 128, 256),
               num_res_units: int = 2, dropout: float = 0.0) -> nn.Module:
    """A 2D MONAI U-Net with stride-2 downsampling between levels."""
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
               channels=tuple(channels), strides=(2,) * (len(channels) - 1),
               num_res_units=num_res_units, dropout=dropout)
    net.config = unet_config(in_channels=in_channels, out_channels=out_channels,
                             channels=channels, num_res_units=num_res_units, dropout=dropout)
    return net


def unet_config(**config: Any) -> dict[str, Any]:
    config["channels"] = list(config["channels"])
    return config
