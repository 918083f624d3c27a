"""The attack suite (design/ATTACKS.md): every attack sees views, never keys.

Each attack returns its figures and, where it reconstructs, the images it
made of the held-out victims, so the report can show them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medveil.attacks.correspondence import fit_correspondence
from medveil.attacks.inversion import InversionBudget, invert, is_image_view, train_inverter
from medveil.attacks.reidentify import ReidBudget, reidentify
from medveil.keys import Key
from medveil.metrics import image_similarity


def seeded_key(role: str, seed: int) -> Key:
    """A reproducible key for benchmark roles. Not a secret: never use it to protect data."""
    return Key(hashlib.sha256(f"medveil/bench/{role}/{seed}".encode()).digest())


@dataclass
class AttackBudget:
    """How hard the attacker tries; the same for every scheme in one run."""

    inversion: InversionBudget = field(default_factory=InversionBudget)
    reid: ReidBudget = field(default_factory=ReidBudget)
    leak_fraction: float = 0.2
    max_pairs: int = 1000
    gallery: int = 100
    shadow_images: int = 1000

    @classmethod
    def quick(cls) -> AttackBudget:
        return cls(inversion=InversionBudget(steps=200, batch_size=16, channels=(16, 32, 64)),
                   reid=ReidBudget(steps=100, batch_size=32))


@dataclass
class AttackResult:
    figures: dict[str, Any] | None
    reconstructions: np.ndarray | None = None


def _as_comparable(view: np.ndarray, like: np.ndarray) -> np.ndarray | None:
    """The view as images shaped like ``like`` (resized, channels averaged), or None."""
    if not is_image_view(view):
        return None
    import torch
    import torch.nn.functional as F  # noqa: N812

    t = torch.from_numpy(np.ascontiguousarray(view))
    if t.shape[1] != like.shape[1]:
        t = t.mean(dim=1, keepdim=True).expand(-1, like.shape[1], -1, -1)
    if t.shape[-2:] != like.shape[-2:]:
        t = F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return np.clip(t.numpy(), 0, 1).astype(np.float32)


def visual(view: np.ndarray | None, images: np.ndarray, *,
           public: np.ndarray | None = None) -> AttackResult:
    """The view as a reader would see it, compared with the plaintext.

    ``view`` is image-shaped (a scheme's ``view_as_image``); None or a code view
    means there is no picture to compare, and the figures are None. Besides the raw
    SSIM / PSNR: ``invariant``, the same after the best per-image affine intensity
    map (a reader inverts and rescales contrast for free); with the attacker's
    ``public`` images, ``floor_ssim`` (their mean image against the victims: the
    best guess without any view) and ``advantage`` of the stronger figure over it.
    """
    from medveil.metrics import advantage, affine_fitted

    comparable = None if view is None else _as_comparable(view, images)
    if comparable is None:
        return AttackResult(None)
    figures: dict[str, Any] = image_similarity(images, comparable)
    figures["invariant"] = image_similarity(images, affine_fitted(images, comparable))
    if public is not None and len(public):
        floor = attacker_floor(public, images)
        best = max(figures["ssim"], figures["invariant"]["ssim"])
        figures["invariant"]["advantage"] = advantage(figures["invariant"]["ssim"], floor)
        figures.update(floor_ssim=floor, advantage=advantage(best, floor))
    return AttackResult(figures, comparable)


def attacker_floor(public: np.ndarray, victims: np.ndarray) -> float:
    """The SSIM of the attacker's best guess without any view (the mean of its public
    images) against the victims: what every reconstruction must beat to show a leak."""
    mean = np.repeat(public.mean(axis=0, keepdims=True), len(victims), axis=0)
    return image_similarity(victims, mean)["ssim"]


def with_advantages(attacks: dict[str, Any], floor: float) -> None:
    """Add ``floor_ssim`` and ``advantage`` to every reconstruction figure, and the
    re-identification rate over chance with its 95 % interval."""
    from medveil.metrics import advantage, wilson_interval

    for figures in attacks.values():
        if isinstance(figures, dict) and "ssim" in figures and "advantage" not in figures:
            figures.update(floor_ssim=floor, advantage=advantage(figures["ssim"], floor))
    reid = attacks.get("reidentify")
    if isinstance(reid, dict) and "top1" in reid:
        reid["top1_over_chance"] = reid["top1"] - reid["chance"]
        reid["top1_ci95"] = list(wilson_interval(reid["top1"], int(reid["gallery"])))


def leak_count(n_train: int, budget: AttackBudget) -> int:
    return max(2, min(budget.max_pairs, int(round(budget.leak_fraction * n_train))))


class Inverter:
    """The attacker's best view -> image map: a U-Net or a pixel correspondence.

    Both are fitted on all but a held-out tenth of the attacker's pairs; the one
    with the higher SSIM on that held-out tenth is kept. The choice never looks
    at the victims' plaintext.
    """

    def __init__(self, views: np.ndarray, images: np.ndarray, *, budget: AttackBudget,
                 seed: int) -> None:
        rng = np.random.default_rng(seed + 5)
        order = rng.permutation(len(views))
        n_check = max(1, len(views) // 10) if len(views) >= 10 else 0
        check, fit = order[:n_check], order[n_check:]
        candidates: dict[str, Any] = {
            "unet": _UNetInverter(train_inverter(views[fit], images[fit],
                                                 budget=budget.inversion, seed=seed)),
        }
        if is_image_view(views):
            corr = fit_correspondence(views[fit], images[fit])
            if corr is not None:
                candidates["correspondence"] = corr
        if n_check and len(candidates) > 1:
            scores = {name: image_similarity(images[check], c.invert(views[check]))["ssim"]
                      for name, c in candidates.items()}
            self.method = max(scores, key=scores.get)
        else:
            self.method = "unet"
        self._chosen = candidates[self.method]

    def invert(self, views: np.ndarray) -> np.ndarray:
        return self._chosen.invert(views)


class _UNetInverter:
    def __init__(self, net: Any) -> None:
        self.net = net

    def invert(self, views: np.ndarray) -> np.ndarray:
        return invert(self.net, views)


def known_plaintext(leaked_views: np.ndarray, leaked_images: np.ndarray,
                    victim_views: np.ndarray, victim_images: np.ndarray, *,
                    budget: AttackBudget, seed: int) -> tuple[AttackResult, Inverter]:
    """Fit the inverter on K leaked pairs, invert the held-out victims."""
    inverter = Inverter(leaked_views, leaked_images, budget=budget, seed=seed)
    recon = inverter.invert(victim_views)
    figures = {**image_similarity(victim_images, recon), "pairs": int(len(leaked_views)),
               "method": inverter.method}
    return AttackResult(figures, recon), inverter


def shadow_key(scheme_factory, public_train, victim_views: np.ndarray,
               victim_images: np.ndarray, *, budget: AttackBudget, seed: int) -> AttackResult:
    """Fit the attacker's own instance (own random key) on public images, invert the victims.

    ``public_train`` is an ImageSet of images disjoint from the victims.
    """
    attacker_key = seeded_key("attacker", seed)  # the attacker's own, unrelated to the victim's
    rng = np.random.default_rng(seed)
    if len(public_train) > budget.shadow_images:
        public_train = public_train.subset(
            np.sort(rng.choice(len(public_train), budget.shadow_images, replace=False)))
    scheme = scheme_factory().fit(public_train, key=attacker_key, seed=seed + 7)
    own_views = np.concatenate([scheme.protect(public_train.images[i:i + 256], key=attacker_key)
                                for i in range(0, len(public_train), 256)])
    inverter = Inverter(own_views, public_train.images, budget=budget, seed=seed + 3)
    recon = inverter.invert(victim_views)
    return AttackResult({**image_similarity(victim_images, recon), "method": inverter.method},
                        recon)


def reidentification(inverter: Inverter, leaked_views: np.ndarray, leaked_images: np.ndarray,
                     victim_views: np.ndarray, victim_images: np.ndarray, *,
                     budget: AttackBudget, seed: int) -> AttackResult:
    """Rank a gallery of N plaintexts (containing the victims) for each victim view."""
    n = min(budget.gallery, len(victim_views))
    pick = np.sort(np.random.default_rng(seed).choice(len(victim_views), n, replace=False))
    queries = inverter.invert(victim_views[pick])
    leaked_inverted = inverter.invert(leaked_views)
    figures = reidentify(queries, victim_images[pick], leaked_inverted=leaked_inverted,
                         leaked_plain=leaked_images, budget=budget.reid, seed=seed)
    return AttackResult(figures)
