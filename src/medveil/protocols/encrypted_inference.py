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

from medveil.errors import ConfigError
from medveil.protocols.base import (
    BenchRun,
    Decoded,
    Protocol,
    in_memory_results,
    register_protocol,
)

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
        return Decoded("classification", probabilities=probabilities_from_logits(logits),
                       logits=logits)

    def measure(self, scheme, data, *, key) -> tuple[dict[str, Any], dict[str, Any]]:
        """The workflow on ``data``'s test split in memory, timed: the figures of the
        bench row's ``encrypted_inference`` section, and the release's arrays."""
        from medveil.metrics import classification_metrics, probabilities_from_logits
        from medveil.protocols.view import release_header
        from medveil.store import ProtectedStore

        test = data.split(SHIPPED_SPLIT)
        started = time.perf_counter()
        arrays, extras, info = self.release(scheme, data, key=key)
        release_s = time.perf_counter() - started
        release = ProtectedStore.in_memory(arrays=arrays, extras=extras,
                                           header=release_header(scheme, data, self, info),
                                           key=key)
        predicted, timing = self.predict(None, release, split=SHIPPED_SPLIT)
        results = in_memory_results(predicted, SHIPPED_SPLIT)
        started = time.perf_counter()
        decoded = self.decode(scheme, results, key=key)
        decrypt_ms = 1000 * (time.perf_counter() - started) / len(test)
        reference = scheme.model.net.forward(scheme.model.check_images(test.images))
        view_bytes = float(np.mean([sum(len(b) for b in blobs) for blobs in
                                    _blobs(arrays[SHIPPED_SPLIT]["view"], scheme)]))
        figures = {
            "metrics": decoded.metrics(test),
            "plaintext_metrics": classification_metrics(probabilities_from_logits(reference),
                                                        test.labels),
            "argmax_agreement": float(np.mean(decoded.logits.argmax(1) == reference.argmax(1))),
            "max_abs_logit_error": float(np.abs(decoded.logits - reference).max()),
            "images": len(test), "encrypted_model": info["encrypted_model"],
            "compile_s": timing["compile_s"], "release_ms_per_image": 1000 * release_s / len(test),
            "eval_ms_per_image": timing["eval_ms_per_image"],
            "decrypt_ms_per_image": decrypt_ms,
            "latency_ms_per_image": timing["eval_ms_per_image"] + decrypt_ms,
            "ciphertext_bytes_per_image": view_bytes,
            "model_bytes": float(sum(v.nbytes for k, v in extras.items()
                                     if k.startswith("ckks_model") or k == "ckks_he_model")),
            "rotations_per_image": timing["rotations_per_image"],
            "packing": scheme.model.plan.describe(), "security": info["security"]}
        return figures, arrays

    def utility(self, scheme, data, *, key, budget, seed: int) -> dict[str, float]:
        return self.measure(scheme, data, key=key)[0]["metrics"]

    def bench_row(self, run: BenchRun) -> dict[str, Any]:
        """The workflow on the test split; the image attacks do not apply (RLWE
        ciphertexts): the row says why, with the parameters and security level.
        Recovery (the owner's decryption) and the wrong-key check run on the first
        ``RECOVERY_IMAGES`` test images."""
        from medveil.bench import GRID_IMAGES, RECOVERY_IMAGES
        from medveil.metrics import image_similarity

        scheme, row = run.scheme, run.row
        test = run.data.split(SHIPPED_SPLIT)
        with run.clock.stage("encrypted_inference"):  # protect, evaluate, decrypt
            figures, arrays = self.measure(scheme, run.data, key=run.key)
        row["params"] = dict(scheme.params)
        row["utility"] = figures.pop("metrics")
        row["encrypted_inference"] = figures
        sample = test.images[:RECOVERY_IMAGES]
        view = arrays[SHIPPED_SPLIT]["view"][:RECOVERY_IMAGES]
        with run.clock.stage("recover"):
            recovered = scheme.recover(view, key=run.key)
            row["recovery"] = image_similarity(sample, recovered)
            row["wrong_key"] = image_similarity(
                sample, scheme.recover_bypassing_check(view, run.wrong_key))
        row["attacks"] = {"visual": None, "known_plaintext": None, "shadow_key": None,
                          "reidentify": None, "not_applicable": scheme.not_applicable_reason()}
        from medveil.verdicts import actor_verdicts

        row["verdicts"] = actor_verdicts(row["attacks"])
        row["cost"] = {"fit_s": run.fit_s,
                       "protect_ms_per_image": figures["release_ms_per_image"],
                       "train_s": scheme.model.info.get("train_s"),
                       "infer_ms_per_image": figures["latency_ms_per_image"],
                       "view_bytes_per_image": figures["ciphertext_bytes_per_image"],
                       "plain_bytes_per_image": float(np.prod(test.image_shape))}
        row["_pictures"] = {"original": sample[:GRID_IMAGES],
                            "key-holder recovery": recovered[:GRID_IMAGES]}
        return row


def _blobs(view: np.ndarray, scheme) -> list[list[bytes]]:
    from medveil.he.shipping import unpack_slots

    return unpack_slots(view, per_row=scheme.model.plan.groups, what="ckks views",
                        slot=scheme.view_slot_bytes)
