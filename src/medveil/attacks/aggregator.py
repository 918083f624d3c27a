"""The aggregator as the attacker: update inversion on what a federated run showed it.

Two figures, both scored as every reconstruction is (matched SSIM and its advantage
over the attacker's floor, the mean of public images):

- ``round_update``: the row's real first-round update of one centre (what this
  aggregator actually saw: a whole local round of every image of the centre, at the
  row's batch size, steps, optimiser and DP noise), inverted for ``update_images``
  images and matched against every training image of that centre. This is the row's
  verdict.
- ``probe``: the most favourable update the row's mechanism can make: one image, one
  plain-SGD step, the row's own clipping and noise (``probe_victims`` victims, each
  inverted alone).

Measured limit, stated in the report's docs: on the federated classifier (a small
CNN with global average pooling) this attack does **not** reconstruct even the probe
(advantage below 0 at 32 and 64 px, up to 8,000 iterations); it does on a network
that provably leaks its input (a fully connected first layer: Geiping et al.'s
Proposition 1; ``tests/unit/test_update_inversion.py``). A "no measurable leak" here is
therefore this attack's limit on this network, not evidence that the update hides the
images. The TV weight is 1e-2 (1e-4, the reference's default, is almost no prior on
[0, 1] pixels; 1e-2 did better on every network tried).

Under secure aggregation (not yet offered: docs/federated.md) the aggregator would see
only the sum and the same code would invert that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medveil.attacks.update_inversion import (
    InversionConfig,
    ObservedUpdate,
    invert_update,
    match_and_score,
)
from medveil.seeds import derive_seed, numpy_rng

#: the total-variation weight of the aggregator's inversion (module docstring)
TV = 1e-2
AGGREGATOR_WHO = "the aggregator: sees each centre's model update every round"


@dataclass
class UpdateSurface:
    """What the aggregator of a federated run saw, for its attacks."""

    #: the row's real update of one centre (first round) and that centre's images
    observed: ObservedUpdate
    victims: np.ndarray
    #: (images, labels, seed) -> the update one plain-SGD step of the row's mechanism
    #: (clipping, noise) makes on those images
    probe: Callable[[np.ndarray, np.ndarray, int], ObservedUpdate]
    labels: np.ndarray  #: the victims' labels (the probe's centre trains on them)
    setting: dict[str, Any] = field(default_factory=dict)


def aggregator_attacks(surface: UpdateSurface, *, budget: Any, seed: int,
                       public: np.ndarray) -> dict[str, Any]:
    """Both figures (module docstring), with what they were run against; ``budget``:
    an :class:`~medveil.attacks.suite.UpdateAttackBudget`."""
    from medveil.metrics import attacker_floor

    config = InversionConfig(iterations=budget.iterations, restarts=budget.restarts, tv=TV)
    victims = surface.victims
    floor = attacker_floor(public, victims)
    observed = replace(surface.observed, n_images=budget.update_images)
    reconstructed = invert_update(observed, config=config, seed=seed)
    round_update = {**match_and_score(reconstructed, victims, floor=floor),
                    "victims": int(len(victims)), "assumed_images": budget.update_images}
    round_update.pop("matched", None)
    picks = numpy_rng(seed, "attacks/aggregator/probe").choice(
        len(victims), size=min(budget.probe_victims, len(victims)), replace=False)
    scores = []
    for i, index in enumerate(np.sort(picks)):
        image = victims[index:index + 1]
        update = surface.probe(image, surface.labels[index:index + 1],
                               derive_seed(seed, f"attacks/aggregator/probe-{i}"))
        guess = invert_update(update, config=config, seed=seed)
        scores.append(match_and_score(guess, image, floor=attacker_floor(public, image)))
    probe = {"ssim": float(np.mean([s["ssim"] for s in scores])),
             "advantage": float(np.mean([s["advantage"] for s in scores])),
             "advantage_min": float(np.min([s["advantage"] for s in scores])),
             "victims": len(scores), "batch_size": 1, "local_steps": 1}
    return {"round_update": round_update, "probe": probe, "setting": dict(surface.setting),
            "iterations": budget.iterations, "restarts": budget.restarts,
            "floor_ssim": floor}


def aggregator_verdict(figures: dict[str, Any] | None) -> dict[str, Any]:
    """The aggregator's verdict from the real round's update (the probe is context)."""
    from medveil.verdicts import judge

    if not figures:
        return {"who": AGGREGATOR_WHO, "level": "not applicable",
                "verdict": "not applicable: the processor sees no model update"}
    advantage = figures["round_update"]["advantage"]
    level, sentence = judge(advantage, None, None)
    return {"who": AGGREGATOR_WHO, "level": level, "verdict": sentence,
            "advantage": advantage, "probe_advantage": figures["probe"]["advantage"]}
