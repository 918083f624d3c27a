"""The attack suite (design/ATTACKS.md): every attack sees views, never keys.

Each attack returns its figures and, where it reconstructs, the images it
made of the held-out victims, so the report can show them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


def visual(view: np.ndarray, images: np.ndarray) -> AttackResult:
    """The view itself, compared with the plaintext (image-shaped views only)."""
    comparable = _as_comparable(view, images)
    if comparable is None:
        return AttackResult(None)
    return AttackResult(image_similarity(images, comparable), comparable)


def leak_count(n_train: int, budget: AttackBudget) -> int:
    return max(2, min(budget.max_pairs, int(round(budget.leak_fraction * n_train))))


def known_plaintext(leaked_views: np.ndarray, leaked_images: np.ndarray,
                    victim_views: np.ndarray, victim_images: np.ndarray, *,
                    budget: AttackBudget, seed: int) -> tuple[AttackResult, Any]:
    """Train an inversion network on K leaked pairs, invert the held-out victims."""
    net = train_inverter(leaked_views, leaked_images, budget=budget.inversion, seed=seed)
    recon = invert(net, victim_views)
    figures = {**image_similarity(victim_images, recon), "pairs": int(len(leaked_views))}
    return AttackResult(figures, recon), net


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
    net = train_inverter(own_views, public_train.images, budget=budget.inversion, seed=seed + 3)
    recon = invert(net, victim_views)
    return AttackResult(image_similarity(victim_images, recon), recon)


def reidentification(known_plaintext_net, leaked_views: np.ndarray, leaked_images: np.ndarray,
                     victim_views: np.ndarray, victim_images: np.ndarray, *,
                     budget: AttackBudget, seed: int) -> AttackResult:
    """Rank a gallery of N plaintexts (containing the victims) for each victim view."""
    n = min(budget.gallery, len(victim_views))
    pick = np.sort(np.random.default_rng(seed).choice(len(victim_views), n, replace=False))
    queries = invert(known_plaintext_net, victim_views[pick])
    leaked_inverted = invert(known_plaintext_net, leaked_views)
    figures = reidentify(queries, victim_images[pick], leaked_inverted=leaked_inverted,
                         leaked_plain=leaked_images, budget=budget.reid, seed=seed)
    return AttackResult(figures)
