"""A small convolutional variational auto-encoder for 28 to 128 pixel images."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class ConvVAE(nn.Module):
    """Three stride-2 convolutions down, a Gaussian latent, three transposed convolutions up."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], latent_dim: int = 64,
                 width: int = 32) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "image_size": list(image_size),
                       "latent_dim": latent_dim, "width": width}
        self.image_size = tuple(image_size)
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
        )
        h8, w8 = -(-image_size[0] // 8), -(-image_size[1] // 8)
        self.seed_shape = (4 * w, h8, w8)
        with torch.no_grad():
            flat = self.encoder(torch.zeros(1, in_channels, *image_size)).numel()
        self.mu = nn.Linear(flat, latent_dim)
        self.logvar = nn.Linear(flat, latent_dim)
        self.expand = nn.Linear(latent_dim, 4 * w * h8 * w8)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(w, in_channels, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.decoder(self.expand(z).view(-1, *self.seed_shape))
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mu, logvar
