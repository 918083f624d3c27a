"""The attack pipeline: every attack of the suite on what a protocol's run exposes.

``attack_row`` takes a protocol's :class:`~medveil.protocols.base.AttackSurface` (the
views an attacker of each actor sees, or why no image attack applies) and the owner's
plaintext, and returns the attacks' figures, a verdict per threat actor and the
pictures of the report. The bench calls it for every row; it knows no protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medveil.attacks.suite import (
    attacker_floor,
    known_plaintext,
    leak_sizes,
    reidentification,
    shadow_key,
    third_parties,
    visual,
    visual_reidentification,
    with_advantages,
)
from medveil.data.imageset import ImageSet
from medveil.seeds import numpy_rng
from medveil.timing import StageClock
from medveil.verdicts import actor_verdicts

#: Test images per column of the report's picture grid.
GRID_IMAGES = 4
#: The split that stands in for a public or consented image set (fesf's hosts, a small
#: gallery's filler): never the owner's patients (train and test).
PUBLIC_SPLIT = "val"


def public_images(data: ImageSet) -> ImageSet | None:
    """The bench's stand-in for a public or consented image set (fesf's hosts): the
    validation split, which the owner's patients (train and test, the only images
    the third-party attack counts as the owner's) never include."""
    return data.split(PUBLIC_SPLIT) if PUBLIC_SPLIT in data.split_names else None


@dataclass
class AttackFindings:
    """What the pipeline found: the row's ``attacks`` and ``verdicts``, the pictures it
    adds to the report, and what it reused from the cache."""

    attacks: dict[str, Any]
    verdicts: dict[str, Any]
    pictures: dict[str, np.ndarray] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)


def attack_row(surface, *, scheme, scheme_name: str, params: dict[str, Any], data: ImageSet,
               budget, seed: int, clock: StageClock | None = None, cache=None
               ) -> AttackFindings:
    """Every attack on ``surface`` (victims: ``data``'s test split; leaked pairs: its
    train split), or the not-applicable row where the surface says so."""
    if surface.views is None:
        attacks = {"visual": None, "known_plaintext": None, "shadow_key": None,
                   "reidentify": None, "not_applicable": surface.not_applicable}
        return AttackFindings(attacks=attacks, verdicts=actor_verdicts(attacks))
    row: dict[str, Any] = {"attacks": {}, "params": params, "cached": []}
    pictures: dict[str, np.ndarray] = {}
    image_attacks(scheme_name, scheme, row, pictures, data.split("train"), data.split("test"),
                  surface.views, budget, seed, spare=public_images(data), clock=clock,
                  cache=cache)
    return AttackFindings(attacks=row["attacks"], verdicts=row["verdicts"], pictures=pictures,
                          cached=row["cached"])


def image_attacks(scheme_name: str, scheme, row: dict[str, Any],
                  pictures: dict[str, np.ndarray], train: ImageSet, test: ImageSet,
                  views: dict[str, np.ndarray], budget, seed: int, *,
                  spare: ImageSet | None = None, clock: StageClock | None = None,
                  cache=None) -> None:
    """The shared suite (and the scheme's own attacks) on the views, into ``row``, then
    a verdict per threat actor (``spare``: images that fill a small gallery).

    Victims are the test split. Re-identification queries ``gallery`` of them against
    a gallery of their plaintexts plus distractors the attacker never saw (the other
    test images and the training images outside the largest leak). The leak curve
    refits the inverter on nested leaks of K pairs; its largest K is the headline
    known-plaintext and re-identification figure. ``clock`` times each attack.
    """
    from medveil.schemes import create

    clock = clock or StageClock()
    attack_budget = budget.attacks
    rng = numpy_rng(seed, "attacks/leak-order")
    order = rng.permutation(len(train))
    sizes = leak_sizes(len(train), attack_budget)
    largest = np.sort(order[:sizes[-1]])
    queries = np.sort(numpy_rng(seed, "attacks/queries").choice(
        len(test), min(attack_budget.gallery, len(test)), replace=False))
    distractors = gallery_distractors(train, test, largest, queries, attack_budget.distractors,
                                      seed, extra=spare)
    victim_pictures = scheme.view_as_image(views["test"])

    with clock.stage("visual"):
        vis = visual(victim_pictures, test.images, public=train.images, masks=test.masks)
        row["attacks"]["visual"] = vis.figures
        if vis.reconstructions is not None:
            pictures["view"] = vis.reconstructions[:GRID_IMAGES]
            vis.figures["reidentify"] = visual_reidentification(
                vis.reconstructions[queries], test.images[queries], distractors)
            owner = np.concatenate([train.images, test.images])
            third = np.sort(numpy_rng(seed, "attacks/third-parties").choice(
                len(test), min(attack_budget.third_party_victims, len(test)), replace=False))
            row["attacks"]["third_parties"] = third_parties(
                vis.reconstructions[third], owner, len(train) + third)

    extra = scheme.attack_inverters()
    curve, best_kp = [], None
    for k in sizes:
        leak = np.sort(order[:k])
        with clock.stage(f"known_plaintext_k{k}"):
            kp, inverter = known_plaintext(views["train"][leak], train.images[leak],
                                           views["test"], test.images, budget=attack_budget,
                                           seed=seed, extra=extra)
        with clock.stage(f"reidentify_k{k}"):
            reid = reidentification(inverter, views["train"][leak], train.images[leak],
                                    views["test"][queries], test.images[queries], distractors,
                                    budget=attack_budget, seed=seed)
        curve.append({**{f: kp.figures[f] for f in ("pairs", "ssim", "psnr", "method")},
                      "reidentify": reid.figures})
        best_kp = kp
    row["attacks"]["known_plaintext"] = best_kp.figures
    row["attacks"]["reidentify"] = curve[-1]["reidentify"]
    row["attacks"]["leak_curve"] = curve

    with clock.stage("shadow_key"):  # the shadow fit, its inverter and re-identification
        shadow = shadow_key(lambda: create(scheme_name, **row["params"]), train, views["test"],
                            test.images, budget=attack_budget, seed=seed, cache=cache)
        if shadow.fit_cached:
            row.setdefault("cached", []).append("shadow_fit")
        row["attacks"]["shadow_key"] = shadow.result.figures
        n_own = min(sizes[-1], len(shadow.own_views))
        shadow.result.figures["reidentify"] = reidentification(
            shadow.inverter, shadow.own_views[:n_own], shadow.own_images[:n_own],
            views["test"][queries], test.images[queries], distractors, budget=attack_budget,
            seed=seed).figures
    with clock.stage("scheme_attacks"):
        row["attacks"].update(scheme.extra_attacks(
            views["test"], test.images, leaked_views=views["train"][largest],
            leaked_images=train.images[largest], budget=attack_budget, seed=seed))
    with_advantages(row["attacks"], attacker_floor(train.images, test.images))
    row["verdicts"] = actor_verdicts(row["attacks"])
    best = max((best_kp, shadow.result), key=lambda r: r.figures["ssim"])
    pictures["best attack"] = best.reconstructions[:GRID_IMAGES]


def gallery_distractors(train: ImageSet, test: ImageSet, leaked: np.ndarray,
                        queries: np.ndarray, limit: int, seed: int,
                        extra: ImageSet | None = None) -> np.ndarray:
    """Gallery distractors the attacker never saw: test images that are not queries and
    training images outside the largest leak, at most ``limit``, seeded; where those
    fall short of ``limit`` (small sets), images of ``extra`` (the validation split)
    fill up."""
    pool = np.concatenate([np.delete(test.images, queries, axis=0),
                           np.delete(train.images, leaked, axis=0)])
    if len(pool) > limit:
        pool = pool[np.sort(numpy_rng(seed, "attacks/distractors").choice(len(pool), limit,
                                                                        replace=False))]
    elif extra is not None and len(extra):
        pool = np.concatenate([pool, extra.images[:limit - len(pool)]])
    return pool
