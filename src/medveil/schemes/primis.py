"""`primis`: sparse codes with keyed ambiguisation; key holders reconstruct (Shiri et al. 2024).

Shiri, Razeghi, Ferdowsi, Salimi, Gunduz, Teodoro, Voloshynovskiy, Zaidi, "PRIMIS:
Privacy-preserving medical image sharing via deep sparsifying transform learning
with obfuscation", J Biomed Inform 150:104583, 2024.

The owner trains a sparsifying auto-encoder (``nets/sparse_ae.py``) on its
images. Each image is cut into patches; each patch becomes ``codes`` sparse
codes (top-k positive and top-k negative values kept). The public view is the
*ambiguised* codes: every off-support coordinate is filled from the key's stream
with a value whose magnitude is at or above a true value of the same code, so
taking the largest entries picks up noise. The support (which coordinates are
true) is the private part; medveil carries it *encrypted beside the codes*
(ChaCha20 under an HKDF-derived key, nonce from an HMAC of the image, and an
HMAC tag over nonce, support and codes), so a key holder needs nothing but the
key file, and anyone else holds a random-looking bit string.

View layout per image (float32): ``patches x codes x code_dim`` ambiguised
values, then the support envelope (nonce 16 B, encrypted support bitmask, tag
16 B), one byte per float.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError, IntegrityError
from medveil.keys import Key
from medveil.schemes.base import Scheme, image_digest, register
from medveil.seeds import seeded

NONCE_BYTES = 16
TAG_BYTES = 16


def _chacha(key_bytes: bytes, nonce: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    return Cipher(algorithms.ChaCha20(key_bytes, nonce), mode=None).encryptor().update(data)


@register
class PrimisScheme(Scheme):
    name = "primis"
    bench_cost = 4.0  # two codec fits and the per-tile inverters
    bench_cost_by_budget = {"full": 2.7}  # 1936 s against plain's 722 s (full bench, cxr64)
    invertible = True
    needs_fit = True
    protocol = "key_holder"
    contract_recovery_ssim = 0.6  # 64 crops, 8 epochs; the full-data figure is the bench's
    contract_params = {"min_steps": 0}  # the contract checks behaviour, not the codec's quality
    cut_params = {"demo": {"epochs": 1, "min_steps": 128}}  # a sixteenth of the codec's steps

    def __init__(self, *, patch: int = 8, codes: int = 3, code_dim: int = 128, k: int = 6,
                 width: int = 16, epochs: int = 8, batch_size: int = 256, lr: float = 2e-3,
                 max_tiles: int = 65536, min_steps: int = 2048,
                 noise_spread: float = 0.0) -> None:
        if int(patch) % 2 or int(patch) < 4:
            raise ConfigError(f"patch must be even and >= 4, got {patch}")
        if int(codes) < 1 or int(k) < 1 or 2 * int(k) > int(code_dim):
            raise ConfigError(f"need codes >= 1 and 1 <= 2k <= code_dim, got codes={codes}, "
                              f"k={k}, code_dim={code_dim}")
        if int(min_steps) < 0:
            raise ConfigError(f"min_steps must be >= 0, got {min_steps}")
        if float(noise_spread) < 0:
            raise ConfigError(f"noise_spread must be >= 0, got {noise_spread}")
        super().__init__(patch=int(patch), codes=int(codes), code_dim=int(code_dim), k=int(k),
                         width=int(width), epochs=int(epochs), batch_size=int(batch_size),
                         lr=float(lr), max_tiles=int(max_tiles), min_steps=int(min_steps),
                         noise_spread=float(noise_spread))
        self._codec = None
        self._image_shape: tuple[int, int, int] | None = None

    # -- geometry -------------------------------------------------------------------
    @property
    def code_dim(self) -> int:
        return self.params["code_dim"]

    def _grid(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        c, h, w = image_shape
        p = self.params["patch"]
        return c, math.ceil(h / p), math.ceil(w / p)

    def _patches_per_image(self, image_shape: tuple[int, ...]) -> int:
        c, gh, gw = self._grid(image_shape)
        return c * gh * gw

    def _support_bytes(self, image_shape: tuple[int, ...]) -> int:
        bits = self._patches_per_image(image_shape) * self.params["codes"] * self.code_dim
        return NONCE_BYTES + math.ceil(bits / 8) + TAG_BYTES

    def view_spec(self, image_shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        values = self._patches_per_image(image_shape) * self.params["codes"] * self.code_dim
        return (values + self._support_bytes(image_shape),), "float32"

    def _to_patches(self, images: np.ndarray) -> np.ndarray:
        n, c, h, w = images.shape
        _, gh, gw = self._grid(images.shape[1:])
        p = self.params["patch"]
        padded = np.pad(images, ((0, 0), (0, 0), (0, gh * p - h), (0, gw * p - w)), mode="edge")
        tiles = padded.reshape(n, c, gh, p, gw, p).transpose(0, 1, 2, 4, 3, 5)
        return np.ascontiguousarray(tiles.reshape(-1, 1, p, p))

    def _from_patches(self, tiles: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
        c, h, w = image_shape
        _, gh, gw = self._grid(image_shape)
        p = self.params["patch"]
        grid = tiles.reshape(-1, c, gh, gw, p, p).transpose(0, 1, 2, 4, 3, 5)
        return grid.reshape(-1, c, gh * p, gw * p)[:, :, :h, :w]

    # -- owner side -----------------------------------------------------------------
    def _build(self):
        from medveil.nets.sparse_ae import SparseCodec

        p = self.params
        return SparseCodec(patch=p["patch"], codes=p["codes"], code_dim=p["code_dim"], k=p["k"],
                           width=p["width"])

    def _fit(self, train: ImageSet, *, key: Key, seed: int) -> None:
        import torch

        from medveil.nets.fitting import fit_one_cycle

        p = self.params
        self._image_shape = tuple(train.image_shape)
        with seeded(seed, "schemes/primis/fit") as gen:
            codec = self._build()
            tiles = self._to_patches(train.images)
            if len(tiles) > p["max_tiles"]:  # a fixed budget of tiles, drawn by the seed
                pick = np.random.default_rng(seed).choice(len(tiles), p["max_tiles"],
                                                          replace=False)
                tiles = tiles[np.sort(pick)]

            def loss_of_batch(batch: torch.Tensor) -> torch.Tensor:
                # every stage's running reconstruction is scored: successive refinement
                recons = codec(batch)
                return sum(torch.mean((r - batch) ** 2) for r in recons) / len(recons)

            # a small set (CHASE_DB1 has 18 training images) gets at least min_steps updates
            per_epoch = -(-len(tiles) // p["batch_size"])
            epochs = max(p["epochs"], -(-p["min_steps"] // per_epoch))
            fit_one_cycle(codec, torch.from_numpy(tiles), loss_of_batch, epochs=epochs,
                          batch_size=p["batch_size"], lr=p["lr"], generator=gen)
        self._codec = codec

    def sparse_codes(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True sparse codes and supports, ``(N, patches * codes, code_dim)`` each."""
        import torch

        tiles = self._to_patches(images)
        with torch.no_grad():
            codes, masks, _ = self._codec.encode(torch.from_numpy(tiles))
        per = self._patches_per_image(images.shape[1:]) * self.params["codes"]
        code = torch.stack(codes, 1).flatten(2).numpy().reshape(len(images), per, -1)
        mask = torch.stack(masks, 1).flatten(2).numpy().reshape(len(images), per, -1)
        return code.astype(np.float32), mask

    def decode_codes(self, codes: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
        """Images from (masked) codes ``(N, patches * codes, code_dim)``."""
        import torch

        n_codes = self.params["codes"]
        shape = self._codec.code_shape
        tiles = codes.reshape(-1, n_codes, *shape)
        with torch.no_grad():
            out = []
            for i in range(0, len(tiles), 256):
                chunk = torch.from_numpy(np.ascontiguousarray(tiles[i:i + 256], dtype=np.float32))
                out.append(self._codec.decode(list(chunk.unbind(1))).numpy())
        images = self._from_patches(np.concatenate(out), image_shape)
        return np.clip(images, 0, 1).astype(np.float32)

    def _ambiguise(self, code: np.ndarray, mask: np.ndarray, key: Key, digest: str) -> np.ndarray:
        """Fill the off-support coordinates with keyed values at or above true magnitudes.

        Each off-support coordinate copies the magnitude of one of its row's true
        values (chosen by the key's stream), times ``1 + noise_spread * u``, with a
        keyed random sign. At ``noise_spread = 0`` every magnitude in a row is a true
        one repeated, so neither the largest nor the smallest entries point at the
        support; above 0 the row's smallest magnitude is always a true one.
        """
        stream = key.stream(f"primis/ambiguise/{digest}")
        rows, dim = code.shape
        two_k = 2 * self.params["k"]
        source = stream.integers(two_k, (rows, dim))
        spread = 1.0 + self.params["noise_spread"] * stream.uniform((rows, dim))
        sign = np.where(stream.uniform((rows, dim)) < 0.5, -1.0, 1.0)
        true = np.sort(np.abs(code) * mask, axis=1)[:, ::-1][:, :two_k]  # true magnitudes first
        count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
        magnitude = np.take_along_axis(true, source % count, axis=1)
        empty = true[:, :1] == 0  # a row with no non-zero true value: borrow the image's scale
        fallback = np.abs(code[mask]).mean() if mask.any() and np.abs(code[mask]).any() else 1.0
        magnitude = np.where(empty, fallback, magnitude)
        noise = (sign * magnitude * spread).astype(np.float32)
        return np.where(mask, code, noise).astype(np.float32)

    def _keys(self, key: Key) -> tuple[bytes, bytes, bytes]:
        return (key.derive("primis/support-cipher"), key.derive("primis/support-tag"),
                key.derive("primis/nonce"))

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        if self._image_shape is not None and tuple(images.shape[1:]) != self._image_shape:
            raise DataError(f"this primis instance was fitted on {self._image_shape} images, got "
                            f"{tuple(images.shape[1:])}; load the data with the same --size")
        cipher_key, tag_key, nonce_key = self._keys(key)
        codes, masks = self.sparse_codes(images)
        shape, _ = self.view_spec(images.shape[1:])
        view = np.zeros((len(images), *shape), dtype=np.float32)
        for i, image in enumerate(images):
            raw = np.ascontiguousarray(image).tobytes()
            digest = image_digest(image)
            public = self._ambiguise(codes[i], masks[i], key, digest).astype(np.float32)
            nonce = hmac.new(nonce_key, raw, hashlib.sha256).digest()[:NONCE_BYTES]
            sealed = _chacha(cipher_key, nonce, np.packbits(masks[i].reshape(-1)).tobytes())
            tag = hmac.new(tag_key, nonce + sealed + public.tobytes(),
                           hashlib.sha256).digest()[:TAG_BYTES]
            envelope = np.frombuffer(nonce + sealed + tag, dtype=np.uint8).astype(np.float32)
            view[i] = np.concatenate([public.reshape(-1), envelope])
        return view

    def _split_view(self, view: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        shape = self._image_shape
        per = self._patches_per_image(shape) * self.params["codes"]
        n_values = per * self.code_dim
        expected = self.view_spec(shape)[0][0]
        if view.ndim != 2 or view.shape[1] != expected:
            raise DataError(f"a primis view row has {expected} values for "
                            f"{'x'.join(map(str, shape))} images, got {view.shape}")
        public = view[:, :n_values].reshape(len(view), per, self.code_dim)
        envelopes = [np.clip(np.rint(row[n_values:]), 0, 255).astype(np.uint8).tobytes()
                     for row in view]
        return public, envelopes

    def _open(self, public: np.ndarray, envelope: bytes, key: Key, *, verify: bool) -> np.ndarray:
        cipher_key, tag_key, _ = self._keys(key)
        nonce, sealed, tag = (envelope[:NONCE_BYTES], envelope[NONCE_BYTES:-TAG_BYTES],
                              envelope[-TAG_BYTES:])
        if verify:
            expect = hmac.new(tag_key, nonce + sealed + np.ascontiguousarray(
                public, dtype=np.float32).tobytes(), hashlib.sha256).digest()[:TAG_BYTES]
            if not hmac.compare_digest(expect, tag):
                raise IntegrityError("a primis view's support tag does not verify: the codes or "
                                     "the support were changed, or the key is not the owner's")
        bits = np.unpackbits(np.frombuffer(_chacha(cipher_key, nonce, sealed), dtype=np.uint8))
        return bits[:public.size].reshape(public.shape).astype(bool)

    def _decode_view(self, view: np.ndarray, key: Key, *, verify: bool) -> np.ndarray:
        public, envelopes = self._split_view(np.asarray(view, dtype=np.float32))
        selected = np.stack([public[i] * self._open(public[i], envelopes[i], key, verify=verify)
                             for i in range(len(public))])
        return self.decode_codes(selected, self._image_shape)

    def _recover(self, view: np.ndarray, *, key: Key) -> np.ndarray:
        return self._decode_view(view, key, verify=True)

    def recover_bypassing_check(self, view: np.ndarray, key: Key) -> np.ndarray:
        """An attacker's decoding with a key of its own: its 'support' is a random bit string."""
        return self._decode_view(view, key, verify=False)

    # -- attacks specific to the codes ------------------------------------------------
    def extra_attacks(self, view: np.ndarray, images: np.ndarray, *,
                      leaked_views: np.ndarray, leaked_images: np.ndarray, budget: Any,
                      seed: int) -> dict[str, Any]:
        """Attacks the code layout invites, beside the shared suite.

        ``magnitude_support``: the attacker is handed the owner's own decoder (the
        strongest assumption: the model leaked, only the key is secret) and reads the
        support off each public code by one of three rules: the codec's own (top-k
        positive and top-k negative entries), the 2k largest magnitudes, or no
        selection at all. The figure is the best rule's, named in ``rule``.

        The per-tile known-plaintext inverter is a candidate of the shared inverter
        (``attack_inverters``), not an attack of its own.
        """
        from medveil.metrics import image_similarity

        public, _ = self._split_view(np.asarray(view, dtype=np.float32))
        k = self.params["k"]
        order = np.argsort(public, axis=-1)
        signed = np.concatenate([order[..., :k], order[..., -k:]], axis=-1)
        largest = np.argsort(-np.abs(public), axis=-1)[..., :2 * k]
        results = {}
        for rule, keep in (("top_k_signed", signed), ("largest_2k", largest), ("all", None)):
            if keep is None:
                guess = public
            else:
                guess = np.zeros_like(public)
                np.put_along_axis(guess, keep, np.take_along_axis(public, keep, -1), -1)
            results[rule] = image_similarity(images, self.decode_codes(guess, self._image_shape))
        rule = max(results, key=lambda r: results[r]["ssim"])
        return {"magnitude_support": {**results[rule], "rule": rule}}

    def attack_inverters(self) -> dict[str, Any]:
        """``tiles``: the layout is public (one code group per tile), so leaked pairs
        become tens of thousands of (tile codes, tile pixels) pairs; an MLP learns the
        inverse tile by tile, a far better-posed problem than a whole-vector decoder."""
        return {"tiles": self._fit_tile_inverter}

    def _fit_tile_inverter(self, views: np.ndarray, images: np.ndarray, *, budget: Any,
                           seed: int) -> Any:
        from medveil.attacks.tiles import TiledInverter

        codes, p = self.params["codes"], self.params["patch"]
        shape = self._image_shape

        def to_codes(view: np.ndarray) -> np.ndarray:
            public, _ = self._split_view(np.asarray(view, dtype=np.float32))
            return public.reshape(-1, codes * self.code_dim)

        return TiledInverter(views, images, to_codes=to_codes, to_tiles=self._to_patches,
                             to_images=lambda t: self._from_patches(t.reshape(-1, 1, p, p),
                                                                    shape),
                             budget=budget, seed=seed)

    # -- state ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if self._codec is None:
            return {}
        return {"image_shape": list(self._image_shape),
                "codec": {k: v.detach().cpu().numpy() for k, v in self._codec.state_dict().items()}}

    def _load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        import torch

        self._image_shape = tuple(int(v) for v in state["image_shape"])
        self._codec = self._build()
        self._codec.load_state_dict({k: torch.as_tensor(v) for k, v in state["codec"].items()})
        self._codec.eval()
