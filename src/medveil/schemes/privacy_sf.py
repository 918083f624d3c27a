"""`privacy_sf`: segmentation on encoded images and masks (Chen et al. 2024).

Chen, Song, Feng, Zeru, Chai, Zhu, "Privacy-SF: An encoding-based
privacy-preserving segmentation framework for medical images", Image and Vision
Computing 151:105246, 2024; the keyed latent transform follows the 2026
follow-up (arXiv 2603.05541).

Client (the owner, with the key): an image encoder and a mask encoder turn every
``patch x patch`` patch into a token; a mask decoder turns mask tokens back into
a mask. Both token sequences then pass through the client's secret orthogonal
transform and bias, drawn from the key's stream. The view (what leaves) is the
image token sequence; for training, the encoded masks leave too.

Server (no key): a mapping network learns encoded image -> encoded mask on the
pairs alone, with augmentation that acts on the token sequence (drop tokens, mix
runs of tokens between two images), never on pixels. Inference: the client
encodes, the server maps, the client decodes the predicted mask.

What the client trains (medveil's choice, docs/schemes.md): the mask
auto-encoder; the image encoder together with a per-token *linear* probe onto
the mask tokens (so the image tokens keep what segmentation needs, and the
non-linear work is left to the server); and an adversarial image decoder behind
a gradient-reversal layer, so the encoder is pushed to make its tokens hard to
invert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError
from medveil.keys import Key
from medveil.protocols.mapping_server import AUGMENTS, EncodedPairs, token_grid
from medveil.schemes.base import Scheme, register
from medveil.seeds import seeded

CLIENT_COPIES = ("dihedral", "flips", "none")


def copy_transforms(copies: str, shape: tuple[int, ...]
                    ) -> list[tuple[Callable[[np.ndarray], np.ndarray],
                                    Callable[[np.ndarray], np.ndarray]]]:
    """(forward, inverse) pairs of the flips a client applies to its pixels.

    ``none``: the identity alone; ``flips``: also horizontal, vertical and both (4);
    ``dihedral``: those and their transposes (8; square images only, other shapes
    get the 4 flips). Flips are their own inverse; a flip then a transpose is undone
    by the transpose then the flip.
    """
    if copies not in CLIENT_COPIES:
        raise ConfigError(f"copies must be one of {CLIENT_COPIES}, got {copies!r}")
    flips: list[Callable[[np.ndarray], np.ndarray]] = [
        lambda a: a, lambda a: a[..., ::-1], lambda a: a[..., ::-1, :],
        lambda a: a[..., ::-1, ::-1]]
    if copies == "none":
        flips = flips[:1]
    pairs = [(flip, flip) for flip in flips]
    if copies == "dihedral" and shape[-1] == shape[-2]:
        pairs += [((lambda a, f=flip: f(a).swapaxes(-1, -2)),
                   (lambda a, f=flip: f(a.swapaxes(-1, -2)))) for flip in flips]
    return pairs


def flipped_copies(arrays: np.ndarray, copies: str) -> np.ndarray:
    """``arrays`` (N, C, H, W) followed by their flipped copies (``copy_transforms``)."""
    if copies == "none":
        return arrays
    return np.ascontiguousarray(np.concatenate(
        [forward(arrays) for forward, _ in copy_transforms(copies, arrays.shape)]))


def keyed_orthogonal(key: Key, purpose: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A random orthogonal matrix and a bias from the key's stream (Haar via QR)."""
    stream = key.stream(purpose)
    q, r = np.linalg.qr(stream.normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # the sign fix that makes QR's Q Haar-distributed
    return q.astype(np.float32), stream.normal(dim).astype(np.float32)


@register
class PrivacySfScheme(Scheme):
    name = "privacy_sf"
    bench_cost = 4.0  # two client fits, a mapping network
    invertible = False
    needs_fit = True
    protocol = "encoded_segmentation"
    tasks = ("segmentation",)
    contract_params = {"steps": 10, "map_steps": 10, "crop": 32}
    # quick: a sixth (the quick U-Net gets a tenth); demo: a seventy-fifth
    cut_params = {"quick": {"steps": 500, "map_steps": 500},
                  "demo": {"steps": 40, "map_steps": 40}}

    def __init__(self, *, patch: int = 8, image_dim: int = 32, mask_dim: int = 16,
                 width: int = 64, steps: int = 3000, crop: int = 96, batch_size: int = 8,
                 lr: float = 2e-3, privacy_weight: float = 0.1, map_width: int = 64,
                 map_blocks: int = 4, map_steps: int = 3000, augment: str = "sequence",
                 token_drop: float = 0.1, token_mix: float = 0.5,
                 token_noise: float = 0.2, map_window: int = 16,
                 client_copies: str = "dihedral", test_copies: str = "dihedral") -> None:
        if int(patch) < 2:
            raise ConfigError(f"patch must be at least 2, got {patch}")
        if int(crop) % int(patch):
            raise ConfigError(f"crop ({crop}) must be a multiple of patch ({patch})")
        if augment not in AUGMENTS:
            raise ConfigError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        for name, value in (("client_copies", client_copies), ("test_copies", test_copies)):
            if value not in CLIENT_COPIES:
                raise ConfigError(f"{name} must be one of {CLIENT_COPIES}, got {value!r}")
        if not 0.0 <= float(token_drop) < 1.0 or not 0.0 <= float(token_mix) <= 1.0:
            raise ConfigError("token_drop must be in [0, 1) and token_mix in [0, 1]")
        super().__init__(patch=int(patch), image_dim=int(image_dim), mask_dim=int(mask_dim),
                         width=int(width), steps=int(steps), crop=int(crop),
                         batch_size=int(batch_size), lr=float(lr),
                         privacy_weight=float(privacy_weight), map_width=int(map_width),
                         map_blocks=int(map_blocks), map_steps=int(map_steps),
                         augment=str(augment), token_drop=float(token_drop),
                         token_mix=float(token_mix), token_noise=float(token_noise),
                         map_window=int(map_window), client_copies=str(client_copies),
                         test_copies=str(test_copies))
        self._nets: dict[str, Any] | None = None
        self._image_shape: tuple[int, int, int] | None = None

    # -- shapes -----------------------------------------------------------------------
    def grid(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        """The token grid of an image: one token per patch, raster order."""
        return token_grid(image_shape, self.params["patch"])

    def view_spec(self, image_shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        gh, gw = self.grid(image_shape)
        return (gh * gw, self.params["image_dim"]), "float32"

    # -- client: fit ------------------------------------------------------------------
    def _build(self, channels: int) -> dict[str, Any]:
        from torch import nn

        from medveil.nets.encoded_seg import MaskTokenDecoder, PatchTokenEncoder

        p = self.params
        return {
            "image_encoder": PatchTokenEncoder(channels, p["image_dim"], patch=p["patch"],
                                               width=p["width"]),
            "mask_encoder": PatchTokenEncoder(1, p["mask_dim"], patch=p["patch"],
                                              width=p["width"]),
            "mask_decoder": MaskTokenDecoder(p["mask_dim"], patch=p["patch"], width=p["width"]),
            "probe": nn.Linear(p["image_dim"], p["mask_dim"]),
        }

    def _fit(self, train: ImageSet, *, key: Key, seed: int) -> None:
        import torch
        import torch.nn.functional as F  # noqa: N812

        from medveil.nets.encoded_seg import MaskTokenDecoder, reverse_gradient
        from medveil.tasks import sample_patches

        if train.masks is None:
            raise DataError("privacy_sf segments: it needs images with masks (a segmentation "
                            "set such as chase-demo), not a classification set")
        p = self.params
        self._image_shape = tuple(int(v) for v in train.image_shape)
        self.grid(self._image_shape)
        crop = min(p["crop"], self._image_shape[1] // p["patch"] * p["patch"],
                   self._image_shape[2] // p["patch"] * p["patch"])
        with seeded(seed, "schemes/privacy_sf/fit") as gen:
            nets = self._build(self._image_shape[0])
            adversary = MaskTokenDecoder(p["image_dim"], patch=p["patch"], width=p["width"])
            adversary.net[-1] = torch.nn.Conv2d(p["width"], self._image_shape[0], 3, padding=1)
            params = [q for net in nets.values() for q in net.parameters()]
            opt = torch.optim.AdamW(params + list(adversary.parameters()), lr=p["lr"])
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"],
                                                        total_steps=p["steps"])
            images = torch.from_numpy(train.images)
            masks = torch.from_numpy(train.masks.astype(np.float32))
            grid = (crop // p["patch"], crop // p["patch"])
            for _ in range(p["steps"]):
                x, m = sample_patches(images, masks, crop, p["batch_size"], gen)
                z_mask = nets["mask_encoder"](m)
                z_image = nets["image_encoder"](x)
                # mask auto-encoder through a noisy channel: the decoder must read masks
                # from inexact tokens (the server's predictions), so the encoder keeps
                # vessel and background tokens apart by more than the noise
                noisy = z_mask + p["token_noise"] * torch.randn(z_mask.shape, generator=gen)
                loss = _mask_loss(nets["mask_decoder"](noisy, grid), m)
                probe = nets["probe"](z_image)  # image tokens must carry the mask
                loss = loss + _mask_loss(nets["mask_decoder"](probe, grid), m) + \
                    F.mse_loss(probe, z_mask.detach())
                # adversary learns to invert; the encoder gets the reversed gradient
                hidden = reverse_gradient(z_image, p["privacy_weight"])
                inverted = torch.sigmoid(adversary(hidden, grid))
                loss = loss + F.mse_loss(inverted, x)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        for net in nets.values():
            net.eval()
        self._nets = nets

    # -- client: encode / decode ------------------------------------------------------
    def _encode(self, net_name: str, arrays: np.ndarray, key: Key, purpose: str,
                dim: int) -> np.ndarray:
        import torch

        q, b = keyed_orthogonal(key, purpose, dim)
        net = self._nets[net_name]
        out = []
        with torch.no_grad():  # one image at a time: a view never depends on its batch
            for i in range(len(arrays)):
                tokens = net(torch.from_numpy(np.ascontiguousarray(arrays[i:i + 1]))).numpy()
                out.append(tokens[0] @ q + b)
        return np.ascontiguousarray(np.stack(out), dtype=np.float32)

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        self._check_shape(images.shape[1:])
        return self._encode("image_encoder", images, key, "privacy_sf/image-transform",
                            self.params["image_dim"])

    def protect_masks(self, masks: np.ndarray, *, key: Key) -> np.ndarray:
        """The encoded masks the client sends with its images for the server's training."""
        self._require_fitted()
        self._bind(key)
        masks = np.asarray(masks, dtype=np.float32)
        if masks.ndim != 4 or masks.shape[1] != 1:
            raise DataError(f"masks must be shaped (N, 1, H, W), got {masks.shape}")
        self._check_shape((self._image_shape[0], *masks.shape[2:]))
        return self._encode("mask_encoder", masks, key, "privacy_sf/mask-transform",
                            self.params["mask_dim"])

    def training_pairs(self, images: np.ndarray, masks: np.ndarray, *, key: Key
                       ) -> EncodedPairs:
        """The encoded (image, mask) pairs a client sends for the server's training.

        The client encodes flipped copies too (``client_copies``): the pixel-space
        flips the plain U-Net trains with, made where the pixels are, before
        encoding, so the server still sees only tokens. On CHASE_DB1 (18 training
        images) the server overfits without them.
        """
        copies = self.params["client_copies"]
        images = flipped_copies(np.asarray(images, dtype=np.float32), copies)
        masks = flipped_copies(np.asarray(masks, dtype=np.float32), copies)
        return EncodedPairs(self.protect(images, key=key), self.protect_masks(masks, key=key))

    def decode_mask_logits(self, tokens: np.ndarray, *, key: Key) -> np.ndarray:
        """Client side: predicted mask tokens -> per-pixel vessel logits (N, 1, H, W)."""
        import torch

        self._require_fitted()
        self._check_key(key)
        q, b = keyed_orthogonal(key, "privacy_sf/mask-transform", self.params["mask_dim"])
        plain = (np.asarray(tokens, dtype=np.float32) - b) @ q.T
        grid = self.grid(self._image_shape)
        with torch.no_grad():
            return self._nets["mask_decoder"](torch.from_numpy(plain), grid).numpy()

    def decode_masks(self, tokens: np.ndarray, *, key: Key) -> np.ndarray:
        """Client side: the server's predicted mask tokens -> binary masks (N, 1, H, W)."""
        return (self.decode_mask_logits(tokens, key=key) > 0).astype(np.uint8)

    def segment(self, images: np.ndarray, server: Callable[[np.ndarray], np.ndarray], *,
                key: Key, copies: str | None = None) -> np.ndarray:
        """The whole inference round trip for the client's ``images``: binary masks.

        For each of the client's test-time copies (``test_copies``: the same flips
        as for training), the client encodes the flipped images, ``server`` (encoded
        images -> encoded masks, no key) maps them, and the client decodes the
        logits and flips them back; the mean logit decides. The server sees only
        tokens, as many sequences per image as there are copies.
        """
        copies = self.params["test_copies"] if copies is None else copies
        images = np.asarray(images, dtype=np.float32)
        pairs = copy_transforms(copies, images.shape)
        total = np.zeros((len(images), 1, *images.shape[2:]), dtype=np.float32)
        for forward, inverse in pairs:
            tokens = server(self.protect(np.ascontiguousarray(forward(images)), key=key))
            total += inverse(self.decode_mask_logits(tokens, key=key))
        return (total / len(pairs) > 0).astype(np.uint8)

    def encode_test_copies(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        """The client's test images and their test-time copies, encoded, copy after copy
        (what a release ships for the server to map; ``decode_test_copies`` undoes it)."""
        images = np.asarray(images, dtype=np.float32)
        return np.concatenate([self.protect(np.ascontiguousarray(forward(images)), key=key)
                               for forward, _ in copy_transforms(self.params["test_copies"],
                                                                 images.shape)])

    def decode_test_copies(self, tokens: np.ndarray, *, key: Key) -> np.ndarray:
        """The server's mask tokens for ``encode_test_copies`` -> binary masks: each copy
        decoded and flipped back, the mean logit decides (as ``segment`` does)."""
        shape = (1, *self._image_shape)
        pairs = copy_transforms(self.params["test_copies"], shape)
        if len(tokens) % len(pairs):
            raise DataError(f"{len(tokens)} mask token sequences are not a whole number of "
                            f"{len(pairs)} test-time copies; the results are not this "
                            "release's")
        n = len(tokens) // len(pairs)
        total = np.zeros((n, 1, *self._image_shape[1:]), dtype=np.float32)
        for index, (_, inverse) in enumerate(pairs):
            total += inverse(self.decode_mask_logits(tokens[index * n:(index + 1) * n],
                                                     key=key))
        return (total / len(pairs) > 0).astype(np.uint8)

    def decode_masks_bypassing_check(self, tokens: np.ndarray, key: Key) -> np.ndarray:
        """A client decoding with a key of its own, past the fingerprint check."""
        saved, self.key_fingerprint = self.key_fingerprint, key.fingerprint
        try:
            return self.decode_masks(tokens, key=key)
        finally:
            self.key_fingerprint = saved

    def view_as_image(self, view: np.ndarray) -> np.ndarray:
        """Each token's distance from the image's mean token, on the token grid.

        Distances survive the secret orthogonal transform, so this is what any reader
        sees whatever the key: if the encoder let the anatomy through, it shows here.
        """
        view = np.asarray(view, dtype=np.float32)
        energy = np.linalg.norm(view - view.mean(axis=1, keepdims=True), axis=-1)
        low = energy.min(axis=1, keepdims=True)
        span = np.maximum(energy.max(axis=1, keepdims=True) - low, 1e-6)
        gh, gw = self.grid(self._image_shape)
        return ((energy - low) / span).reshape(-1, 1, gh, gw).astype(np.float32)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if self._image_shape is not None and tuple(shape) != self._image_shape:
            raise DataError(f"this privacy_sf instance was fitted on {self._image_shape} "
                            f"images, got {tuple(shape)}; load the data with the same --size")

    # -- attacks ----------------------------------------------------------------------
    def attack_inverters(self) -> dict[str, Any]:
        """``tokens``: the token layout is public (token i is patch i), so leaked pairs
        become (token, patch) pairs, thousands per image, and an MLP learns to invert
        one token into its patch."""
        return {"tokens": self._fit_token_inverter}

    def _fit_token_inverter(self, views: np.ndarray, images: np.ndarray, *, budget: Any,
                            seed: int) -> Any:
        from medveil.attacks.tiles import TiledInverter, patches_to_images, to_patches

        p = self.params["patch"]
        shape = tuple(images.shape[1:])
        return TiledInverter(
            views, images, to_codes=lambda v: np.asarray(v).reshape(-1, v.shape[-1]),
            to_tiles=lambda x: to_patches(x, p),
            to_images=lambda t: patches_to_images(t.reshape(-1, shape[0], p, p), shape),
            budget=budget, seed=seed)

    # -- state ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if self._nets is None:
            return {}
        return {"image_shape": list(self._image_shape),
                "nets": {name: {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
                         for name, net in self._nets.items()}}

    def _load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        import torch

        self._image_shape = tuple(int(v) for v in state["image_shape"])
        self._nets = self._build(self._image_shape[0])
        for name, net in self._nets.items():
            net.load_state_dict({k: torch.as_tensor(v) for k, v in state["nets"][name].items()})
            net.eval()


def _mask_loss(logits, masks):
    """Binary cross-entropy plus soft Dice: vessels are a few percent of the pixels."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    bce = F.binary_cross_entropy_with_logits(logits, masks)
    prob = torch.sigmoid(logits)
    inter = (prob * masks).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + masks.sum(dim=(1, 2, 3)) + 1)
    return bce + (1 - dice).mean()
