"""``key_holder``: key holders recover the images and run the task on them (primis).

The release holds every split's codes (with train and val labels or masks, as a view release
does), but codes are not images to train on: the processor has nothing to train and
nothing to answer. A key holder, given the key and the owner state by the owner,
recovers the images (``medveil recover``) and trains and predicts with the standard
model on them, as on any plaintext data set: in a run, that is the owner's half
finishing on its own once the release has gone out.
"""

from __future__ import annotations

import time
from typing import Any

from medveil.protocols.base import (
    SCORED_SPLIT,
    ExchangeOwner,
    Protocol,
    decoded_predictions,
    register_protocol,
)
from medveil.protocols.messages import Message, to_bundle
from medveil.protocols.view import ViewProtocol, predict_standard, train_standard


class KeyHolderOwner(ExchangeOwner):
    """Release the codes; then, as the key holder, recover, train and predict."""

    def receive(self, message: Message | None) -> Message | None:
        if message is not None:
            raise ValueError("a key_holder processor has nothing to answer")
        with self.clock.stage("recover"):
            recovered = self.protocol.recover(self.scheme, to_bundle(self.release, key=self.key),
                                              key=self.key)
        #: the key holder's recovered data set: the model's input domain
        self.recovered = recovered
        with self.clock.stage("task_training"):
            self.model = train_standard(recovered, budget=self.budget, seed=self.seed)
        started = time.perf_counter()
        with self.clock.stage("predict"):
            predictions = predict_standard(self.model, recovered.split(SCORED_SPLIT).images)
        self.decoded = decoded_predictions(predictions)
        self.figures["train_s"] = self.model.train_s
        self.figures["predict_ms_per_image"] = \
            1000 * (time.perf_counter() - started) / max(1, len(self.decoded))
        return None

    def section(self, *, wrong_key) -> dict[str, Any]:
        """Does the key holder's recovery keep the texture a radiologist reads?"""
        from medveil.metrics import texture_agreement

        return {"texture": texture_agreement(
            self.data.split(SCORED_SPLIT).images,
            self.scheme.recover(self.release.arrays[SCORED_SPLIT]["view"], key=self.key))}


@register_protocol
class KeyHolderProtocol(Protocol):
    name = "key_holder"
    summary = ("key holders recover the images (`medveil recover --key K --state S`) and "
               "train the standard model on what they recover (`medveil train --data "
               "RECOVERED.npz`)")
    trains = False
    answers = False

    def release(self, scheme, data, *, key):
        return ViewProtocol.release(self, scheme, data, key=key)

    def owner_half(self, scheme, data, *, key, budget, seed, clock=None):
        return KeyHolderOwner(self, scheme, data, key=key, budget=budget, seed=seed,
                              clock=clock)

    def membership_target(self, outcome, data, *, budget, seed: int):
        """The key holders' model on recovered images."""
        from medveil.protocols.view import standard_membership_target

        return standard_membership_target(
            outcome.model, outcome.owner.recovered, budget=budget,
            domain_name="recovered images",
            threat="the key holders, or anyone they let query the model, holding plain or "
                   "recovered images")

    def describe(self, section: dict[str, Any], row: dict[str, Any]) -> list[str]:
        recovery, texture = row.get("recovery"), section.get("texture")
        if not (recovery and texture):
            return []
        return [f"key holder recovers SSIM {recovery['ssim']:.3f} / {recovery['psnr']:.1f} "
                "dB; GLCM texture of recovered vs original (Pearson r / mean relative "
                "error): " + ", ".join(f"{name} {t['pearson']:.3f} / "
                                      f"{t['mean_abs_rel_error']:.1%}"
                                      for name, t in texture.items())]
