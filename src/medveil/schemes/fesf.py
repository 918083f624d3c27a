"""`fesf`: frequency-domain exchange style fusion into host images (FESF).

Sun, Yang, Ran, Wang, Yu, Zhang, "Plaintext-Free Deep Learning for
Privacy-Preserving Medical Image Analysis via Frequency Information Embedding",
arXiv 2403.16473. The plaintext never leaves: its low-frequency amplitude is
blended into a *host* image's amplitude and the surrogate keeps the host's
phase (Image Hidden Module, IHM); an adversarial generator then pulls the
surrogate toward the host domain and a second hiding pass re-embeds the
plaintext's amplitude (Image Quality Enhancement Module, IQEM). Diagnostic
models are trained and tested on surrogates only.

Choices where the paper is silent (docs/schemes.md): the low-frequency mask is
a centred square of half-width ``round(alpha * min(H, W))`` (FDA's
convention); inside it the amplitude is ``(1 - beta) * A_host + beta *
A_plain``; the host pool is a set the user names (``hosts=PATH`` or the
``public`` images handed to ``fit``: a public or consented set, never the
owner's patients unless ``hosts=owner`` says so, with a warning, because every
surrogate keeps its host's phase and so shows the host's anatomy); the host
of each image is drawn from the key's stream under a purpose bound to the
image's hash; the IQEM is a residual generator against a PatchGAN critic
(least-squares GAN loss plus an L1 term that keeps the generator close to its
input), and the second pass uses the generator's output as the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError
from medveil.keys import Key
from medveil.schemes.base import Scheme, image_digest, register
from medveil.seeds import derive_seed, seeded


def low_frequency_mask(shape: tuple[int, int], alpha: float) -> np.ndarray:
    """A centred square of half-width ``round(alpha * min(H, W))`` (at least 1 bin)."""
    h, w = shape
    half = max(1, int(round(alpha * min(h, w))))
    mask = np.zeros((h, w), dtype=np.float32)
    ch, cw = h // 2, w // 2
    mask[max(0, ch - half):ch + half + 1, max(0, cw - half):cw + half + 1] = 1.0
    return mask


def hide(images: np.ndarray, hosts: np.ndarray, *, alpha: float, beta: float) -> np.ndarray:
    """IHM: the plaintexts' low-frequency amplitude blended into the hosts', hosts' phase.

    Both arrays are ``(N, C, H, W)`` in [0, 1]; the result is clipped to [0, 1].
    """
    mask = np.fft.ifftshift(low_frequency_mask(images.shape[-2:], alpha))  # unshifted layout
    plain = np.fft.fft2(images.astype(np.float64))
    host = np.fft.fft2(hosts.astype(np.float64))
    amplitude = np.abs(host) * (1 - beta * mask) + np.abs(plain) * (beta * mask)
    mixed = np.fft.ifft2(amplitude * np.exp(1j * np.angle(host))).real
    return np.clip(mixed, 0.0, 1.0).astype(np.float32)


@register
class FesfScheme(Scheme):
    name = "fesf"
    bench_cost = 1.5  # fitted twice (owner, shadow)
    bench_cost_by_budget = {"full": 1.2}  # 862 s against plain's 722 s (full bench, cxr64)
    cut_params = {"demo": {"epochs": 3}}  # a third of the enhancer's epochs
    invertible = False
    needs_fit = True

    uses_public_images = True
    #: the value of ``hosts`` that takes the owner's own training patients as hosts
    OWNER_HOSTS = "owner"

    def __init__(self, *, alpha: float = 0.1, beta: float = 0.9, hosts: str = "public",
                 host_fraction: float = 0.2, max_hosts: int = 256, use_iqem: bool = True,
                 epochs: int = 10, max_fit_images: int = 1000, batch_size: int = 32,
                 lr: float = 2e-4, width: int = 16, content_weight: float = 10.0) -> None:
        if not 0.0 < float(alpha) <= 0.5:
            raise ConfigError(f"alpha must be in (0, 0.5], got {alpha}")
        if not 0.0 <= float(beta) <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        if not 0.0 < float(host_fraction) < 1.0:
            raise ConfigError(f"host_fraction must be in (0, 1), got {host_fraction}")
        if int(max_fit_images) < 1:
            raise ConfigError(f"max_fit_images must be at least 1, got {max_fit_images}")
        super().__init__(alpha=float(alpha), beta=float(beta), hosts=str(hosts),
                         host_fraction=float(host_fraction), max_hosts=int(max_hosts),
                         use_iqem=bool(use_iqem), epochs=int(epochs),
                         max_fit_images=int(max_fit_images), batch_size=int(batch_size),
                         lr=float(lr), width=int(width),
                         content_weight=float(content_weight))
        self._hosts: np.ndarray | None = None
        self._generator = None

    # -- hosts ------------------------------------------------------------------------
    def _host_pool(self, train: ImageSet, seed: int, public: ImageSet | None) -> np.ndarray:
        """The hosts: ``public`` images (the default), a named set, or, with
        ``hosts=owner``, a part of the owner's own training split (warned: those
        patients' anatomy shows in every surrogate)."""
        p = self.params
        rng = np.random.default_rng(derive_seed(seed, "schemes/fesf/hosts"))
        if p["hosts"] == self.OWNER_HOSTS:
            import warnings

            warnings.warn("fesf hosts=owner: the hosts are the owner's own training patients, "
                          "and every surrogate shows its host's anatomy; use a public or "
                          "consented host set (--param hosts=PATH) unless those patients "
                          "consented", UserWarning, stacklevel=3)
            n = max(1, min(p["max_hosts"], int(round(p["host_fraction"] * len(train)))))
            pool = train.images[np.sort(rng.choice(len(train), n, replace=False))]
        elif p["hosts"] == "public":
            if public is None or not len(public):
                raise ConfigError(
                    "fesf needs host images that are not the owner's patients: give a public "
                    "or consented set of the same modality with --param hosts=PATH (or "
                    "--param hosts=owner to use the owner's own training patients, whose "
                    "anatomy then shows in every release)")
            if tuple(public.image_shape) != tuple(train.image_shape):
                raise DataError(f"the public host images are {public.image_shape}, the images "
                                f"{train.image_shape}; give hosts of the same size and channels")
            n = min(p["max_hosts"], len(public))
            pool = public.images[np.sort(rng.choice(len(public), n, replace=False))]
        else:
            from medveil.data import load_dataset

            c, h, w = train.image_shape
            source = load_dataset(p["hosts"], size=(h, w), color="rgb" if c == 3 else "gray")
            if tuple(source.image_shape) != tuple(train.image_shape):
                raise DataError(f"host set {p['hosts']} reads as {source.image_shape}, the "
                                f"images are {train.image_shape}; pick a host set of the "
                                "same channels")
            n = min(p["max_hosts"], len(source))
            pool = source.images[np.sort(rng.choice(len(source), n, replace=False))]
        return np.ascontiguousarray(pool, dtype=np.float32)

    def hosts_for(self, images: np.ndarray, key: Key) -> np.ndarray:
        """The host of each image, drawn from the key's stream; never the image itself."""
        pool = self._hosts
        chosen = np.empty_like(images)
        for i, image in enumerate(images):
            digest = image_digest(image)
            index = int(key.stream(f"fesf/host/{digest}").integers(len(pool)))
            if len(pool) > 1 and np.array_equal(pool[index], image):
                index = (index + 1) % len(pool)  # an image is never its own host
            chosen[i] = pool[index]
        return chosen

    # -- owner side -------------------------------------------------------------------
    def _fit(self, train: ImageSet, *, key: Key, seed: int,
             public: ImageSet | None = None) -> None:
        self._hosts = self._host_pool(train, seed, public)
        if not self.params["use_iqem"]:
            return
        import torch

        from medveil.nets.iqem import PatchCritic, SurrogateGenerator

        p = self.params
        images = train.images
        if len(images) > p["max_fit_images"]:  # the GAN's cost on two cores, not its need
            pick = np.random.default_rng(derive_seed(seed, "schemes/fesf/fit-images")).choice(
                len(images), p["max_fit_images"], replace=False)
            images = np.ascontiguousarray(images[np.sort(pick)])
        first = hide(images, self.hosts_for(images, key), alpha=p["alpha"], beta=p["beta"])
        with seeded(seed, "schemes/fesf/fit") as gen:
            generator = SurrogateGenerator(train.image_shape[0], width=p["width"])
            critic = PatchCritic(train.image_shape[0], width=p["width"])
            opt_g = torch.optim.Adam(generator.parameters(), lr=p["lr"], betas=(0.5, 0.999))
            opt_d = torch.optim.Adam(critic.parameters(), lr=p["lr"], betas=(0.5, 0.999))
            x, real = torch.from_numpy(first), torch.from_numpy(self._hosts)
            for _ in range(p["epochs"]):
                order = torch.randperm(len(x), generator=gen)
                for i in range(0, len(x), p["batch_size"]):
                    batch = x[order[i:i + p["batch_size"]]]
                    hosts = real[torch.randint(len(real), (len(batch),), generator=gen)]
                    fake = generator(batch)
                    # critic: hosts are real, enhanced surrogates are fake (least squares)
                    loss_d = 0.5 * (torch.mean((critic(hosts) - 1) ** 2)
                                    + torch.mean(critic(fake.detach()) ** 2))
                    opt_d.zero_grad()
                    loss_d.backward()
                    opt_d.step()
                    # generator: look like a host, stay close to its input
                    loss_g = 0.5 * torch.mean((critic(fake) - 1) ** 2) + p["content_weight"] * \
                        torch.mean(torch.abs(fake - batch))
                    opt_g.zero_grad()
                    loss_g.backward()
                    opt_g.step()
            generator.eval()
        self._generator = generator

    def _enhance(self, surrogates: np.ndarray) -> np.ndarray:
        """The generator, one image at a time so a view never depends on its batch."""
        import torch

        out = np.empty_like(surrogates)
        with torch.no_grad():
            for i in range(len(surrogates)):
                out[i] = self._generator(torch.from_numpy(surrogates[i:i + 1]))[0].numpy()
        return out

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        if self._hosts is None:
            raise ConfigError("fesf has no host pool: call fit first")
        if tuple(images.shape[1:]) != tuple(self._hosts.shape[1:]):
            raise DataError(f"this fesf instance was fitted on {self._hosts.shape[1:]} images, "
                            f"got {images.shape[1:]}; load the data with the same --size")
        p = self.params
        images = np.asarray(images, dtype=np.float32)
        surrogates = hide(images, self.hosts_for(images, key), alpha=p["alpha"], beta=p["beta"])
        if p["use_iqem"]:  # enhance toward the host domain, then hide the plaintext again
            surrogates = hide(images, self._enhance(surrogates), alpha=p["alpha"],
                              beta=p["beta"])
        return np.ascontiguousarray(surrogates, dtype=np.float32)

    # -- attacks ----------------------------------------------------------------------
    def extra_attacks(self, view: np.ndarray, images: np.ndarray, *,
                      leaked_views: np.ndarray, leaked_images: np.ndarray, budget: Any,
                      seed: int) -> dict[str, Any]:
        """``low_frequency_amplitude``: read the plaintext's amplitude back out of the view.

        The IHM puts ``beta * A_plain + (1 - beta) * A_host`` in the low band by
        design. The attacker knows the public parameters (alpha, beta) and holds
        plaintexts of the same domain (the leaked set, used here only as a prior, not
        as pairs): it subtracts the domain's mean amplitude as the expected host
        share, borrows the phase of the domain's mean image for the low band (the
        anatomy of aligned scans is similar), and fills the rest of the spectrum with
        the mean image. ``chance_ssim`` is the mean image alone: what the attacker
        knows without the view. No training: it measures what the low band itself
        gives away.
        """
        from medveil.metrics import image_similarity

        if not len(leaked_images):
            return {}
        prior = np.fft.fft2(np.asarray(leaked_images, dtype=np.float64))
        mean_spectrum = prior.mean(axis=0)
        mean_amplitude = np.abs(prior).mean(axis=0)
        beta = max(self.params["beta"], 1e-3)
        band = np.fft.ifftshift(low_frequency_mask(view.shape[-2:], self.params["alpha"])) > 0
        amplitude = np.abs(np.fft.fft2(np.asarray(view, dtype=np.float64)))
        estimate = np.clip((amplitude - (1 - beta) * mean_amplitude) / beta, 0.0, None)
        spectrum = np.where(band, estimate * np.exp(1j * np.angle(mean_spectrum)),
                            mean_spectrum)
        guess = np.clip(np.fft.ifft2(spectrum).real, 0.0, 1.0).astype(np.float32)
        mean_image = np.broadcast_to(np.clip(np.fft.ifft2(mean_spectrum).real, 0, 1),
                                     images.shape).astype(np.float32)
        chance = image_similarity(images, mean_image)
        return {"low_frequency_amplitude": {
            **image_similarity(images, guess), "actor": 2, "chance_ssim": chance["ssim"],
            "chance_psnr": chance["psnr"], "prior_images": len(leaked_images)}}

    # -- state ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if self._hosts is None:
            return {}
        state: dict[str, Any] = {"hosts": self._hosts}
        if self._generator is not None:
            state["generator_config"] = self._generator.config
            state["generator"] = {k: v.detach().cpu().numpy()
                                  for k, v in self._generator.state_dict().items()}
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._hosts = np.asarray(state["hosts"], dtype=np.float32)
        if "generator" in state:
            import torch

            from medveil.nets.iqem import SurrogateGenerator

            config = state["generator_config"]
            self._generator = SurrogateGenerator(config["channels"], width=config["width"],
                                                 blocks=config["blocks"])
            self._generator.load_state_dict({k: torch.as_tensor(v)
                                             for k, v in state["generator"].items()})
            self._generator.eval()
