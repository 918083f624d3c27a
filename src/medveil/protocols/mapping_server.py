"""The server's half of ``encoded_segmentation`` (Chen et al. 2024): a mapping network
from encoded images to encoded masks, trained on encoded pairs and nothing else.

It lives with the protocol, not with the scheme: the server never holds the client's
scheme (encoders, keyed transforms), only the release's parameters and image shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medveil.errors import ConfigError, DataError
from medveil.seeds import seeded

AUGMENTS = ("sequence", "none")
#: The release's scheme parameters the server reads (the rest are the client's).
SERVER_PARAMS = ("patch", "image_dim", "mask_dim", "map_width", "map_blocks", "lr",
                 "map_steps", "batch_size", "map_window", "augment", "token_drop", "token_mix")


@dataclass
class EncodedPairs:
    """One centre's training material on an ``encoded_segmentation`` server."""

    images: np.ndarray  #: encoded images, as the scheme's ``protect`` makes them
    masks: np.ndarray  #: encoded masks, as its ``protect_masks`` makes them


def token_grid(image_shape: tuple[int, ...], patch: int) -> tuple[int, int]:
    """The token grid of an image: one token per ``patch`` x ``patch`` patch, raster order."""
    _, h, w = image_shape
    if h % patch or w % patch:
        raise DataError(f"privacy_sf needs image sides divisible by patch {patch}, got "
                        f"{h}x{w}; read the data with --size a multiple of {patch}")
    return h // patch, w // patch


class MappingServer:
    """The server: trains the mapping network and maps encoded images, with no key."""

    def __init__(self, params: dict[str, Any], image_shape: tuple[int, ...]) -> None:
        missing = [name for name in SERVER_PARAMS if name not in params]
        if missing:
            raise DataError(f"the release's scheme parameters lack {', '.join(missing)}; "
                            "re-protect the data with this version of medveil")
        self.params = {name: params[name] for name in SERVER_PARAMS}
        self.image_shape = tuple(int(v) for v in image_shape)
        self.grid = token_grid(self.image_shape, int(self.params["patch"]))

    def train(self, centres: list[EncodedPairs], *, seed: int = 0,
              augment: str | None = None):
        """One mapping network on the pooled centres' pairs.

        Each step draws a batch from one centre (centres in turn), so every batch is
        under one secret transform, and applies the sequence augmentation to it.
        """
        import torch
        import torch.nn.functional as F  # noqa: N812

        from medveil.nets.encoded_seg import MappingNetwork

        p = self.params
        augment = p["augment"] if augment is None else augment
        if augment not in AUGMENTS:
            raise ConfigError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        with seeded(seed, "protocols/encoded_segmentation/mapping") as gen:
            net = MappingNetwork(p["image_dim"], p["mask_dim"], centres=len(centres),
                                 width=p["map_width"], blocks=p["map_blocks"])
            opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=1e-4)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"],
                                                        total_steps=p["map_steps"])
            data = [(torch.from_numpy(c.images), torch.from_numpy(c.masks)) for c in centres]
            for step in range(p["map_steps"]):
                centre = step % len(data)
                x_all, y_all = data[centre]
                pick = torch.randint(len(x_all), (min(p["batch_size"], len(x_all)),),
                                     generator=gen)
                x, y, window = token_windows(x_all[pick], y_all[pick], self.grid,
                                             p["map_window"], gen)
                if augment == "sequence":
                    x, y = sequence_augment(x, y, gen, drop=p["token_drop"], mix=p["token_mix"])
                loss = F.mse_loss(net(x, window, centre), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            net.eval()
        return net

    def map_tokens(self, net, tokens: np.ndarray, *, centre: int = 0) -> np.ndarray:
        """Encoded images -> predicted encoded masks."""
        import torch

        with torch.no_grad():
            out = [net(torch.from_numpy(tokens[i:i + 8]), self.grid, centre).numpy()
                   for i in range(0, len(tokens), 8)]
        return np.concatenate(out).astype(np.float32)


def token_windows(images, masks, grid: tuple[int, int], size: int, gen):
    """A random ``size x size`` window of each pair's token grid, as sequences.

    The server trains on windows the way a U-Net trains on patches: a window of
    tokens is exactly the encoding of an image crop on patch boundaries, and the
    convolutional trunk runs on any grid. Returns the windows and their grid.
    """
    import torch

    gh, gw = grid
    wh, ww = min(size, gh), min(size, gw)
    if (wh, ww) == (gh, gw):
        return images, masks, grid
    n = len(images)
    image_grid = images.reshape(n, gh, gw, -1)
    mask_grid = masks.reshape(n, gh, gw, -1)
    ys = torch.randint(0, gh - wh + 1, (n,), generator=gen)
    xs = torch.randint(0, gw - ww + 1, (n,), generator=gen)
    xi = torch.stack([image_grid[i, ys[i]:ys[i] + wh, xs[i]:xs[i] + ww] for i in range(n)])
    yi = torch.stack([mask_grid[i, ys[i]:ys[i] + wh, xs[i]:xs[i] + ww] for i in range(n)])
    return xi.reshape(n, wh * ww, -1), yi.reshape(n, wh * ww, -1), (wh, ww)


def sequence_augment(images, masks, gen, *, drop: float, mix: float):
    """Augment encoded pairs as token sequences, never as pixels.

    ``drop``: each image token is zeroed with this probability (the mask tokens stay:
    the mapping learns to fill in from the neighbours). ``mix``: with this
    probability an image swaps a random run of its sequence (up to half its length)
    with another image of the batch, in both the image and the mask sequences, so
    the pair stays consistent.
    """
    import torch

    images, masks = images.clone(), masks.clone()
    n, length, _ = images.shape
    if drop > 0:
        keep = (torch.rand((n, length, 1), generator=gen) >= drop).to(images.dtype)
        images = images * keep
    if mix > 0 and n > 1:
        partner = torch.randperm(n, generator=gen)
        source_images, source_masks = images.clone(), masks.clone()
        for i in range(n):
            if float(torch.rand((), generator=gen)) >= mix:
                continue
            run = int(torch.randint(1, max(2, length // 2 + 1), (), generator=gen))
            start = int(torch.randint(0, length - run + 1, (), generator=gen))
            images[i, start:start + run] = source_images[partner[i], start:start + run]
            masks[i, start:start + run] = source_masks[partner[i], start:start + run]
    return images, masks
