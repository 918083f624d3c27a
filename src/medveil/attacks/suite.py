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
from medveil.metrics import attacker_floor, image_similarity  # noqa: F401  (API)
from medveil.seeds import derive_seed


def seeded_key(role: str, seed: int) -> Key:
    """A reproducible key for benchmark roles. Not a secret: never use it to protect data."""
    return Key(hashlib.sha256(f"medveil/bench/{role}/{seed}".encode()).digest())


@dataclass(frozen=True)
class UpdateAttackBudget:
    """How hard the aggregator tries (federated rows; medveil.attacks.aggregator)."""

    iterations: int = 1000
    restarts: int = 2
    update_images: int = 4  #: images it reconstructs from a real round's update
    probe_victims: int = 4


@dataclass
class AttackBudget:
    """How hard the attacker tries; the same for every scheme in one run."""

    inversion: InversionBudget = field(default_factory=InversionBudget)
    reid: ReidBudget = field(default_factory=ReidBudget)
    #: the leak curve: known-plaintext and re-identification at each K leaked pairs
    #: (capped by the training split); the largest is the row's headline figure
    leak_sizes: tuple[int, ...] = (10, 100, 1000)
    #: victims whose views are re-identified (queries)
    gallery: int = 100
    #: images of the same modality the attacker never saw, added to the gallery
    distractors: int = 1000
    shadow_images: int = 1000
    #: victims whose views are matched against every image the owner holds
    third_party_victims: int = 200
    #: reference models of the membership attack RMIA (the same training as the row's
    #: model on other images; medveil.attacks.membership)
    membership_references: int = 4
    #: the aggregator's update inversion (federated rows; medveil.attacks.aggregator)
    updates: UpdateAttackBudget = field(default_factory=UpdateAttackBudget)

    @classmethod
    def quick(cls) -> AttackBudget:
        return cls(inversion=InversionBudget(steps=200, batch_size=16, channels=(16, 32, 64)),
                   reid=ReidBudget(steps=100, batch_size=32), leak_sizes=(10, 100),
                   distractors=300, membership_references=2,
                   updates=UpdateAttackBudget(iterations=400, restarts=1, probe_victims=2))


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
           public: np.ndarray | None = None, masks: np.ndarray | None = None
           ) -> AttackResult:
    """The view as a reader would see it, compared with the plaintext.

    ``view`` is image-shaped (a scheme's ``view_as_image``); None or a code view
    means there is no picture to compare, and the figures are None. Besides the raw
    SSIM / PSNR: ``invariant``, the same after the best per-image affine intensity
    map (a reader inverts and rescales contrast for free); with the attacker's
    ``public`` images, ``floor_ssim`` (their mean image against the victims: the
    best guess without any view) and ``advantage`` of the stronger figure over it.
    With the victims' ``masks`` (segmentation) and ``public`` images, ``structure``:
    how well an untrained ridge detector finds the annotated structure in the view
    (:func:`structure_figure`), a leak the SSIM figures can miss.
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
        if masks is not None:
            figures["structure"] = structure_figure(comparable, images, masks, public)
    return AttackResult(figures, comparable)


#: the least AUC by which the plaintext must beat the guess for the structure figure
STRUCTURE_MARGIN = 0.02


def structure_figure(pictures: np.ndarray, images: np.ndarray, masks: np.ndarray,
                     public: np.ndarray) -> dict[str, float] | None:
    """The annotated structure (vessels) a reader finds in the pictures: the mean AUC of
    :func:`medveil.metrics.structure_detection` on the pictures (``auc``), on the
    attacker's floor, the mean of its public images (``floor_auc``: where vessels
    usually run), and on the plaintexts themselves (``plaintext_auc``: what the images
    show), with ``advantage = (auc - floor_auc) / (plaintext_auc - floor_auc)``: the
    share of what the plaintext shows beyond the guess (a perfect copy scores 1, as on
    the SSIM advantage, whose perfect copy scores SSIM 1). None where no victim has a
    mask with both classes, or where the detector finds the structure in the plaintext
    no better than in the guess (by less than ``STRUCTURE_MARGIN``)."""
    from medveil.metrics import structure_detection

    shown = structure_detection(masks, pictures)
    usable = ~np.isnan(shown)
    if not usable.any():
        return None
    mean = np.repeat(public.mean(axis=0, keepdims=True), int(usable.sum()), axis=0)
    auc = float(shown[usable].mean())
    floor = float(np.nanmean(structure_detection(masks[usable], mean)))
    plaintext = float(np.nanmean(structure_detection(masks[usable], images[usable])))
    if plaintext - floor < STRUCTURE_MARGIN:
        return None  # the detector sees no more in the plaintext than in the guess
    return {"auc": auc, "floor_auc": floor, "plaintext_auc": plaintext,
            "advantage": float((auc - floor) / max(1e-9, plaintext - floor))}


def with_advantages(attacks: dict[str, Any], floor: float) -> None:
    """Add ``floor_ssim`` and ``advantage`` to every reconstruction figure (the leak
    curve's points too)."""
    from medveil.metrics import advantage

    figures_list = [f for f in attacks.values() if isinstance(f, dict)]
    figures_list += [point for point in attacks.get("leak_curve") or []]
    for figures in figures_list:
        if "ssim" in figures and "advantage" not in figures:
            figures.update(floor_ssim=floor, advantage=advantage(figures["ssim"], floor))


def leak_sizes(n_train: int, budget: AttackBudget) -> list[int]:
    """The leak curve's K values, capped by the training split, without repeats."""
    return sorted({max(2, min(k, n_train)) for k in budget.leak_sizes})


class Inverter:
    """The attacker's best view -> image map: a U-Net, a pixel correspondence, or an
    inverter the scheme's public layout invites (``Scheme.attack_inverters``).

    All are fitted on all but a held-out tenth of the attacker's pairs; the one
    with the higher SSIM on that held-out tenth is kept (``scores``). The choice
    never looks at the victims' plaintext.
    """

    def __init__(self, views: np.ndarray, images: np.ndarray, *, budget: AttackBudget,
                 seed: int, extra: dict[str, Any] | None = None) -> None:
        rng = np.random.default_rng(derive_seed(seed, "attacks/inverter/held-out"))
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
        for name, fit_inverter in (extra or {}).items():
            candidates[name] = fit_inverter(views[fit], images[fit], budget=budget, seed=seed)
        self.scores: dict[str, float] = {}
        if n_check and len(candidates) > 1:
            self.scores = {name: image_similarity(images[check], c.invert(views[check]))["ssim"]
                           for name, c in candidates.items()}
            self.method = max(self.scores, key=self.scores.get)
        else:
            self.method = "unet"
        self.candidates = candidates
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
                    budget: AttackBudget, seed: int, extra: dict[str, Any] | None = None
                    ) -> tuple[AttackResult, Inverter]:
    """Fit the inverter on K leaked pairs, invert the held-out victims.

    ``by_method`` gives every candidate's figure on the victims, for the record; the
    headline is the candidate chosen on the attacker's own held-out pairs.
    """
    inverter = Inverter(leaked_views, leaked_images, budget=budget, seed=seed, extra=extra)
    recon = inverter.invert(victim_views)
    by_method = {name: image_similarity(victim_images, c.invert(victim_views))["ssim"]
                 for name, c in inverter.candidates.items() if name != inverter.method}
    by_method[inverter.method] = image_similarity(victim_images, recon)["ssim"]
    figures = {**image_similarity(victim_images, recon), "pairs": int(len(leaked_views)),
               "method": inverter.method, "by_method": by_method,
               "held_out_scores": inverter.scores}
    return AttackResult(figures, recon), inverter


@dataclass
class ShadowAttack:
    """The shadow-key attacker's result, its inverter and its own (view, image) pairs."""

    result: AttackResult
    inverter: Inverter
    own_views: np.ndarray
    own_images: np.ndarray
    #: the attacker's fit came from the bench's cache (its own entry, its own key)
    fit_cached: bool = False


def shadow_key(scheme_factory, public_train, victim_views: np.ndarray,
               victim_images: np.ndarray, *, budget: AttackBudget, seed: int,
               cache: Any = None) -> ShadowAttack:
    """Fit the attacker's own instance (own random key) on public images, invert the victims.

    ``public_train`` is an ImageSet of images disjoint from the victims; a scheme that
    takes public images (fesf's hosts) gets the attacker's own. With the bench's
    ``cache``, the attacker's fit is reused from an earlier run of the same images,
    scheme, parameters, seed and code: its entry is addressed by the attacker's key,
    so it is never the owner's.
    """
    attacker_key = seeded_key("attacker", seed)  # the attacker's own, unrelated to the victim's
    rng = np.random.default_rng(derive_seed(seed, "attacks/shadow/images"))
    if len(public_train) > budget.shadow_images:
        public_train = public_train.subset(
            np.sort(rng.choice(len(public_train), budget.shadow_images, replace=False)))
    scheme = scheme_factory()
    from medveil.cache import fit_scheme

    scheme, cached = fit_scheme(
        cache, "shadow_fit", scheme, public_train, key=attacker_key,
        seed=derive_seed(seed, "attacks/shadow/fit"),
        **({"public": public_train} if scheme.uses_public_images else {}))
    own_views = np.concatenate([scheme.protect(public_train.images[i:i + 256], key=attacker_key)
                                for i in range(0, len(public_train), 256)])
    inverter = Inverter(own_views, public_train.images, budget=budget,
                        seed=derive_seed(seed, "attacks/shadow/inverter"),
                        extra=scheme.attack_inverters())
    recon = inverter.invert(victim_views)
    return ShadowAttack(AttackResult({**image_similarity(victim_images, recon),
                                      "method": inverter.method}, recon),
                        inverter, own_views, public_train.images, fit_cached=cached)


def reidentification(inverter: Inverter, leaked_views: np.ndarray, leaked_images: np.ndarray,
                     query_views: np.ndarray, query_images: np.ndarray,
                     distractors: np.ndarray, *, budget: AttackBudget, seed: int
                     ) -> AttackResult:
    """Rank a gallery (the queries' plaintexts plus distractors the attacker never saw)
    for each query view, through the attacker's chosen inverter."""
    figures = reidentify(inverter.invert(query_views), query_images,
                         distractors=distractors,
                         leaked_inverted=inverter.invert(leaked_views),
                         leaked_plain=leaked_images, budget=budget.reid, seed=seed)
    return AttackResult(with_interval(figures))


def visual_reidentification(pictures: np.ndarray, query_images: np.ndarray,
                            distractors: np.ndarray) -> dict[str, Any]:
    """A reader who sees only the views ranks a gallery by each picture's correlation
    with every gallery image, sign ignored (the best affine intensity map's fit), and by
    the same on their fine structure (a biometric matcher's vessels and edges): no
    training, no pairs. The stronger ranking is reported."""
    from medveil.attacks.reidentify import rank_scores

    gallery = np.concatenate([query_images, distractors]) if len(distractors) else query_images
    scores = rank_scores(pictures, gallery)
    method = max(scores, key=lambda m: scores[m])
    top1, top5 = scores[method]
    return with_interval({"top1": top1, "top5": top5, "chance": 1.0 / len(gallery),
                          "gallery": len(gallery), "queries": len(pictures), "method": method,
                          **{f"{name}_top1": value[0] for name, value in scores.items()}})


def with_interval(reid: dict[str, Any]) -> dict[str, Any]:
    """Re-identification over chance, with the 95 % Wilson interval over its queries."""
    from medveil.metrics import wilson_interval

    queries = int(reid.get("queries", reid["gallery"]))
    reid["top1_over_chance"] = reid["top1"] - reid["chance"]
    reid["top1_ci95"] = list(wilson_interval(reid["top1"], queries))
    return reid


def third_parties(pictures: np.ndarray, owner_images: np.ndarray, victim_rows: np.ndarray, *,
                  shortlist: int = 5, null_quantile: float = 0.95) -> dict[str, Any]:
    """How many *other* patients a view discloses, among every image the owner holds.

    Each picture is matched against all owner images but its own victim's: the
    ``shortlist`` best by correlation (sign ignored) are scored by SSIM after the
    best affine intensity map, and the best is the picture's third-party match. The
    same is done for the victims' own plaintexts, whose best other-patient match is
    what look-alikes give by chance; a picture *discloses* a third party when its
    match beats that null's ``null_quantile`` (so about 5 % of pictures do by chance).
    """
    from medveil.metrics import wilson_interval

    best, best_rows = _best_third_party(pictures, owner_images, victim_rows, shortlist)
    null, _ = _best_third_party(owner_images[victim_rows], owner_images, victim_rows,
                                shortlist)
    threshold = float(np.quantile(null, null_quantile))
    disclosed = best > threshold
    rate = float(disclosed.mean())
    return {"disclosure_rate": rate, "chance": 1.0 - null_quantile,
            "disclosure_ci95": list(wilson_interval(rate, len(best))),
            "over_chance": rate - (1.0 - null_quantile),
            "third_parties_disclosed": int(len(np.unique(best_rows[disclosed]))),
            "mean_match_ssim": float(best.mean()), "null_threshold_ssim": threshold,
            "victims": int(len(best)), "owner_images": int(len(owner_images))}


def _best_third_party(pictures: np.ndarray, owner_images: np.ndarray, victim_rows: np.ndarray,
                      shortlist: int) -> tuple[np.ndarray, np.ndarray]:
    from medveil.metrics import affine_fitted, per_image_ssim, standardized

    correlation = np.abs(standardized(pictures) @ standardized(owner_images).T)
    correlation[np.arange(len(pictures)), victim_rows] = -np.inf  # the victim is no third party
    candidates = np.argsort(-correlation, axis=1)[:, :shortlist]
    scores = np.empty(candidates.shape, dtype=np.float64)
    for j in range(candidates.shape[1]):
        others = owner_images[candidates[:, j]]
        scores[:, j] = per_image_ssim(others, affine_fitted(others, pictures))
    pick = scores.argmax(axis=1)
    rows = np.arange(len(pictures))
    return scores[rows, pick], candidates[rows, pick]
