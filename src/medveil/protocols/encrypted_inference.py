"""``encrypted_inference``: the processor evaluates a CNN on CKKS ciphertexts (ckks).

Ran and Li 2025: the owner trains the HE-friendly CNN in plaintext (the scheme's
``fit``), encrypts its test images, and ships them with a public context (no
secret key) and the model, whose weights are themselves encrypted under the
owner's public key in the ``encrypted_model`` setting. The processor evaluates the
model on the ciphertexts and returns encrypted logits; only the owner decrypts
them. There is nothing for the processor to train.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from medveil.errors import ConfigError, DataError
from medveil.protocols.base import (
    AttackSurface,
    Decoded,
    ExchangeOwner,
    Protocol,
    TaskOutcome,
    register_protocol,
)
from medveil.protocols.messages import Message

#: Only the split the processor runs the model on leaves the owner.
SHIPPED_SPLIT = "test"


def evaluate_release(release, *, split: str) -> tuple[list[list[bytes]], dict[str, Any]]:
    """Processor: the encrypted logits of every image of ``split``, and the timings.

    Uses only what the release holds (public context, the model as shipped); the
    first image is evaluated twice, the first time encoding the weights (plain
    model) or loading them (encrypted model): its cost is ``compile_s``.
    """
    from medveil.he.ckks import _save
    from medveil.he.packing import evaluate_packed
    from medveil.he.shipping import (
        load_ciphertexts,
        load_public,
        processor_backend,
        slot_bytes,
        unpack_slots,
    )

    public = load_public(release.extras)
    plan, backend, info = processor_backend(release.extras, public)
    views = release.part(split)["view"]
    rows = unpack_slots(views, per_row=plan.groups, what="ckks views",
                        slot=slot_bytes(public.params, seeded=True))

    started = time.perf_counter()
    if rows:
        evaluate_packed(plan, load_ciphertexts(public.ctx, rows[0]), backend)
    compile_s = time.perf_counter() - started
    rotations = backend.rotations
    started = time.perf_counter()
    out = [[_save(evaluate_packed(plan, load_ciphertexts(public.ctx, blobs),
                                   backend))] for blobs in rows]
    eval_s = time.perf_counter() - started
    n = max(1, len(rows))
    return out, {**info, "compile_s": compile_s, "eval_ms_per_image": 1000 * eval_s / n,
                 "rotations_per_image": rotations, "images": len(rows)}


@register_protocol
class EncryptedInferenceProtocol(Protocol):
    name = "encrypted_inference"
    summary = ("the owner trains the model; the processor evaluates it on ciphertexts with the "
               "release's public context (`medveil predict --data RELEASE`, no --model)")
    scheme_needs = ("processor_extras", "decrypt_logits", "not_applicable_reason",
                    "train_plaintext_model")
    trains = False
    #: decrypting is the owner's cost: the bench checks recovery on this many images
    recovery_images = 32

    def release(self, scheme, data, *, key):
        if SHIPPED_SPLIT not in data.split_names:
            raise ConfigError(f"{data.name} has no '{SHIPPED_SPLIT}' split to encrypt")
        test = data.split(SHIPPED_SPLIT)
        arrays = {SHIPPED_SPLIT: {"view": scheme.protect(test.images, key=key)}}
        return arrays, scheme.processor_extras(key), {
            "encrypted_model": bool(scheme.params["encrypted_model"]),
            "security": scheme.he_params.security()}

    def predict(self, model, release, *, split: str):
        if model is not None:
            raise ConfigError("ckks evaluates the model shipped in the release; drop --model")
        from medveil.he.shipping import pack_slots

        blobs, info = evaluate_release(release, split=split)
        return {"logits_ciphertexts": pack_slots(blobs)}, info

    def decode(self, scheme, results, *, key) -> Decoded:
        from medveil.he.shipping import unpack_slots
        from medveil.metrics import probabilities_from_logits

        if key is None:
            raise ConfigError("decrypting ckks results needs the owner's --key")
        array = results.part(results.manifest["split"])["logits_ciphertexts"]
        logits = scheme.decrypt_logits([b[0] for b in unpack_slots(array, per_row=1,
                                                                   what="ckks results")],
                                       key=key)
        if not np.isfinite(logits).all():
            raise DataError(f"{results.label} decrypts to non-finite logits: the processor's "
                            "ciphertexts are not an evaluation of the release; refuse them")
        return Decoded("classification", probabilities=probabilities_from_logits(logits),
                       logits=logits)

    def owner_half(self, scheme, data, *, key, budget, seed, clock=None):
        return EncryptedInferenceOwner(self, scheme, data, key=key, budget=budget, seed=seed,
                                       clock=clock)

    def attack_surface(self, outcome: TaskOutcome) -> AttackSurface:
        """RLWE ciphertexts: no image attack applies; the row says why, with the
        parameters and the security level."""
        return AttackSurface(views=None,
                             not_applicable=outcome.owner.scheme.not_applicable_reason())

    def membership_target(self, outcome, data, *, budget, seed: int):
        """The owner's model in plaintext (its twin: the encrypted model computes the same
        logits): whoever holds the model's weights or the owner's decrypted answers,
        asking about plain images."""
        from medveil.attacks.membership import (
            MembershipTarget,
            Samples,
            candidate_splits,
            classification_scorer,
            reference_imageset,
        )
        from medveil.metrics import probabilities_from_logits

        scheme = outcome.owner.scheme

        def scorer(model):
            return classification_scorer(lambda x: probabilities_from_logits(
                model.net.forward(model.check_images(x))))

        def fit_reference(train: Samples, val: Samples, ref_seed: int):
            reference = reference_imageset(train, val, like=data, truth="labels")
            return scorer(scheme.train_plaintext_model(reference, seed=ref_seed))

        return MembershipTarget(
            domain="plain images (the plaintext twin of the encrypted model)",
            threat="the owner's side: whoever holds the model's weights (decrypted, or shipped "
                   "in clear when encrypted_model is off) or queries it through the owner",
            splits=candidate_splits(data, truth="labels"), score=scorer(scheme.model),
            fit_reference=fit_reference)

    def describe(self, section: dict[str, Any], row: dict[str, Any]) -> list[str]:
        return [f"decrypted predictions agree with the plaintext model on "
                f"{section['argmax_agreement']:.1%} of {section['images']} test images (max "
                f"logit error {section['max_abs_logit_error']:.1e}), "
                f"{section['latency_ms_per_image']:.0f} ms per image (the processor's "
                "evaluation and the owner's decryption; "
                f"{'encrypted' if section.get('encrypted_model') else 'plain'} model)"]


class EncryptedInferenceOwner(ExchangeOwner):
    """The owner's half: encrypt the test images (the release), decrypt the logits; its
    section compares them with the plaintext model on the same images."""

    def _view_bytes(self) -> float:
        view = self.release.arrays[SHIPPED_SPLIT]["view"]
        return float(np.mean([sum(len(b) for b in blobs)
                              for blobs in _blobs(view, self.scheme)]))

    def receive(self, message: Message | None) -> Message | None:
        if message is not None:
            self.evaluation = dict(message.header.get("protocol", {}))
        answer = super().receive(message)
        # the model is the owner's (trained in plaintext, then encrypted): its training is
        # the owner's cost; the processor's is its evaluation
        self.figures["train_s"] = self.scheme.model.info.get("train_s")
        self.figures["predict_ms_per_image"] = self.evaluation["eval_ms_per_image"]
        return answer

    def section(self, *, wrong_key) -> dict[str, Any]:
        from medveil.metrics import classification_metrics, probabilities_from_logits

        test = self.data.split(SHIPPED_SPLIT)
        scheme, decoded, timing = self.scheme, self.decoded, self.evaluation
        reference = scheme.model.net.forward(scheme.model.check_images(test.images))
        extras = self.release.extras
        latency = timing["eval_ms_per_image"] + self.figures["decode_ms_per_image"]
        return {
            "plaintext_metrics": classification_metrics(probabilities_from_logits(reference),
                                                        test.labels),
            "argmax_agreement": float(np.mean(decoded.logits.argmax(1) == reference.argmax(1))),
            "max_abs_logit_error": float(np.abs(decoded.logits - reference).max()),
            "images": len(test), "encrypted_model": bool(scheme.params["encrypted_model"]),
            "compile_s": timing["compile_s"],
            "release_ms_per_image": self.figures["protect_ms_per_image"],
            "eval_ms_per_image": timing["eval_ms_per_image"],
            "decrypt_ms_per_image": self.figures["decode_ms_per_image"],
            "latency_ms_per_image": latency,
            "ciphertext_bytes_per_image": self.figures["view_bytes_per_image"],
            "model_bytes": float(sum(v.nbytes for k, v in extras.items()
                                     if k.startswith("ckks_model") or k == "ckks_he_model")),
            "rotations_per_image": timing["rotations_per_image"],
            "packing": scheme.model.plan.describe(),
            "security": self.release.header["protocol"]["security"]}


def _blobs(view: np.ndarray, scheme) -> list[list[bytes]]:
    from medveil.he.shipping import unpack_slots

    return unpack_slots(view, per_row=scheme.model.plan.groups, what="ckks views",
                        slot=scheme.view_slot_bytes)
