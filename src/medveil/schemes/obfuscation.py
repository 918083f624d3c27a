"""`obfuscation`: VAE pass + keyed non-bijective intensity mapping (Popescu et al. 2022).

Popescu, Taca, Vizitiu, Nita, Suciu, Itu, Scafa-Udriste, "Obfuscation Algorithm
for Privacy-Preserving Deep Learning-Based Medical Image Analysis", Applied
Sciences 12(8):3997, 2022. The owner trains a VAE on its images; each image is
encoded, its latent sampled and decoded (keeping the structure a classifier
needs, dropping fine detail); then a random many-to-one lookup table maps
intensity levels to levels, so that not even the key holder can invert it.

Choices where the paper is silent (docs/schemes.md): the VAE pass comes first
and the mapping second; the latent noise of each image is drawn from the key's
stream under a purpose that includes a hash of the image, so the same key
gives the same view of the same image in any batch; the table is a random
surjection from ``levels`` input levels onto ``round(levels * (1 - collapse))``
output levels drawn from the key (every output level is hit, the rest collide).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError
from medveil.keys import Key
from medveil.schemes.base import Scheme, image_digest, register
from medveil.seeds import seeded


@register
class ObfuscationScheme(Scheme):
    name = "obfuscation"
    bench_cost = 1.4  # fitted twice (owner, shadow)
    bench_cost_by_budget = {"full": 1.8}  # its VAE: 1286 s against plain's 722 s (full, cxr64)
    cut_params = {"demo": {"epochs": 8}}  # a quarter of the VAE's epochs
    invertible = False
    needs_fit = True

    def __init__(self, *, latent_dim: int = 64, kl_weight: float = 0.05, epochs: int = 30,
                 batch_size: int = 64, lr: float = 2e-3, width: int = 32, levels: int = 16,
                 collapse: float = 0.5, use_vae: bool = True, use_mapping: bool = True) -> None:
        if not 0.0 <= float(collapse) < 1.0:
            raise ConfigError(f"collapse must be in [0, 1), got {collapse}")
        if not 2 <= int(levels) <= 65536:
            raise ConfigError(f"levels must be in [2, 65536], got {levels}")
        if not (use_vae or use_mapping):
            raise ConfigError("at least one of use_vae and use_mapping must be true")
        super().__init__(latent_dim=int(latent_dim), kl_weight=float(kl_weight),
                         epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                         width=int(width), levels=int(levels), collapse=float(collapse),
                         use_vae=bool(use_vae), use_mapping=bool(use_mapping))
        self._vae = None

    # -- owner side ---------------------------------------------------------------
    def _build(self, image_shape: tuple[int, ...]):
        from medveil.nets.vae import ConvVAE

        return ConvVAE(image_shape[0], tuple(image_shape[1:]), latent_dim=self.params["latent_dim"],
                       width=self.params["width"])

    def _fit(self, train: ImageSet, *, key: Key, seed: int) -> None:
        if not self.params["use_vae"]:
            return
        import torch

        from medveil.nets.fitting import fit_one_cycle

        p = self.params
        with seeded(seed, "schemes/obfuscation/fit") as gen:
            vae = self._build(train.image_shape)

            def loss_of_batch(batch: torch.Tensor) -> torch.Tensor:
                eps = torch.randn(len(batch), p["latent_dim"], generator=gen)
                recon, mu, logvar = vae(batch, eps)
                sse = ((recon - batch) ** 2).flatten(1).sum(1).mean()
                kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
                return sse + p["kl_weight"] * kl

            fit_one_cycle(vae, torch.from_numpy(train.images), loss_of_batch,
                          epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                          generator=gen, optimiser="adamw")
        self._vae = vae

    def _table(self, key: Key) -> np.ndarray:
        """A keyed many-to-one table over the levels; derived at each use, never stored."""
        levels = self.params["levels"]
        n_out = max(1, int(round(levels * (1.0 - self.params["collapse"]))))
        stream = key.stream("obfuscation/table")
        outputs = stream.choice(levels, n_out, replace=False)  # the levels that survive
        table = outputs[stream.integers(n_out, levels)]  # collisions: many inputs per output
        table[stream.choice(levels, n_out, replace=False)] = outputs  # every output is hit
        return table

    def _latent_noise(self, images: np.ndarray, key: Key) -> np.ndarray:
        """Per-image latent noise from the key's stream, bound to the image's content."""
        noise = []
        for image in images:
            digest = image_digest(image)
            noise.append(key.stream(f"obfuscation/latent/{digest}")
                         .normal(self.params["latent_dim"]))
        return np.stack(noise).astype(np.float32)

    def vae_pass(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        """Encode, sample the latent with keyed noise, decode.

        One image at a time: convolution kernels round differently for different
        batch sizes, and the mapping that follows would turn those last-bit
        differences into different levels, so a view would depend on its batch.
        """
        import torch

        eps = torch.from_numpy(self._latent_noise(images, key))
        out = np.empty_like(images)
        with torch.no_grad():
            for i in range(len(images)):
                decoded, _, _ = self._vae(torch.from_numpy(images[i:i + 1]), eps[i:i + 1])
                out[i] = decoded[0].numpy()
        return out

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        out = self.vae_pass(images, key=key) if self.params["use_vae"] else images
        if self.params["use_mapping"]:
            top = self.params["levels"] - 1
            levels = np.clip(np.rint(out * top), 0, top).astype(np.int64)
            out = self._table(key)[levels] / top
        return np.ascontiguousarray(out, dtype=np.float32)

    # -- state ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if self._vae is None:
            return {}
        return {"vae_config": self._vae.config,
                "vae": {k: v.detach().cpu().numpy() for k, v in self._vae.state_dict().items()}}

    def _load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        import torch

        config = state["vae_config"]
        self._vae = self._build((config["in_channels"], *config["image_size"]))
        self._vae.load_state_dict({k: torch.as_tensor(v) for k, v in state["vae"].items()})
        self._vae.eval()
