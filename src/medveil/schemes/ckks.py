"""`ckks`: CNN diagnosis on CKKS-encrypted images (Ran and Li 2025).

Ran and Li, "A Faster Privacy-Preserving Medical Image Diagnosis Scheme with
Machine Learning", J Imaging Inform Med 38:2716-2728, 2025. The model owner
trains an HE-friendly CNN (BN, degree-2 polynomial activations) in plaintext;
images leave the owner only as CKKS ciphertexts; the processor evaluates the
network on them with a public context; the owner decrypts the logits.

The view of an image is its packed ciphertexts (see :mod:`medveil.he.packing`),
SEAL-serialised (seeded symmetric encryption, zstd), each in a fixed-size slot so
views stack into an array. Encryption is probabilistic, as it must be: the same
image encrypts differently each time (``deterministic_views = False``), and only
the owner's key decrypts it (``recover``). The image attacks do not apply to
RLWE ciphertexts; the scorecard reports the parameters and their security level
instead (``attacks.not_applicable``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError, IntegrityError
from medveil.keys import Key
from medveil.schemes.base import Scheme, register

#: Bytes reserved per ciphertext in a view: a seeded N = 8192 ciphertext at the top
#: level serialises (zstd) to about 214 KB; the bound leaves a wide margin.
CT_SLOT_BYTES = 1 << 18


@register
class CKKSScheme(Scheme):
    name = "ckks"
    invertible = True
    needs_fit = True
    utility_path = "encrypted_inference"
    tasks = ("classification",)  # an encrypted CNN classifier
    deterministic_views = False
    image_attacks_apply = False

    def __init__(self, *, architecture: str = "auto", epochs: int = 15,
                 channels_per_segment: int | None = None, encrypted_model: bool = False,
                 poly_modulus_degree: int = 8192,
                 coeff_bits: tuple[int, ...] | list[int] = (33, 27, 27, 27, 27, 27, 50),
                 scale_bits: int = 27) -> None:
        from medveil.he.ckks import CKKSParameters

        if architecture not in ("auto", "tutorial", "deep"):
            raise ConfigError(f"architecture must be auto, tutorial or deep, got {architecture!r}")
        params = CKKSParameters(int(poly_modulus_degree), tuple(int(b) for b in coeff_bits),
                                int(scale_bits))
        params.check()
        if params.depth < 5:
            raise ConfigError(f"the HE networks need 5 multiplicative levels; coeff_bits "
                              f"{list(coeff_bits)} give {params.depth}")
        super().__init__(architecture=architecture, epochs=int(epochs),
                         channels_per_segment=channels_per_segment,
                         encrypted_model=bool(encrypted_model),
                         poly_modulus_degree=params.poly_modulus_degree,
                         coeff_bits=list(params.coeff_bits), scale_bits=params.scale_bits)
        self.model = None
        self._owner: dict[str, Any] = {}

    # -- owner side -----------------------------------------------------------------
    @property
    def he_params(self):
        from medveil.he.ckks import CKKSParameters

        return CKKSParameters(self.params["poly_modulus_degree"], tuple(self.params["coeff_bits"]),
                              self.params["scale_bits"])

    def _fit(self, train: ImageSet, *, key: Key, seed: int) -> None:
        from medveil.he.model import train_he_model

        self.model, _ = train_he_model(train, architecture=self.params["architecture"],
                                       epochs=self.params["epochs"], seed=seed,
                                       channels_per_segment=self.params["channels_per_segment"])

    def owner_keys(self, key: Key):
        """The CKKS key set derived from ``key`` (cached in memory, never in the state)."""
        from medveil.he.ckks import OwnerKeys

        self._check_key(key)
        if key.fingerprint not in self._owner:
            self._owner = {key.fingerprint: OwnerKeys(key, self.he_params,
                                                      self.model.plan.rotation_steps)}
        return self._owner[key.fingerprint]

    def view_spec(self, image_shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        groups = self.model.plan.groups if self.model is not None else 1
        return (groups * CT_SLOT_BYTES,), "uint8"

    def encrypt_images(self, images: np.ndarray, *, key: Key) -> list[list[Any]]:
        owner = self.owner_keys(key)
        plan = self.model.plan
        return [[owner.encrypt(vec) for vec in plan.pack_image(image)]
                for image in self.model.check_images(images)]

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        owner = self.owner_keys(key)
        plan = self.model.plan
        images = self.model.check_images(images)
        view = np.zeros((len(images), plan.groups * CT_SLOT_BYTES), dtype=np.uint8)
        for i, image in enumerate(images):
            for g, vec in enumerate(plan.pack_image(image)):
                blob = owner.encrypt_bytes(vec)
                if len(blob) + 8 > CT_SLOT_BYTES:
                    raise AssertionError(f"ciphertext of {len(blob)} B exceeds its view slot")
                start = g * CT_SLOT_BYTES
                view[i, start:start + 8] = np.frombuffer(len(blob).to_bytes(8, "little"),
                                                         dtype=np.uint8)
                view[i, start + 8:start + 8 + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        return view

    def view_ciphertexts(self, view: np.ndarray, ctx) -> list[list[Any]]:
        """Parse a view array back into SEAL ciphertexts (any holder of the context)."""
        from medveil.he.ckks import _load, sealapi

        view = np.asarray(view, dtype=np.uint8)
        groups = self.model.plan.groups
        if view.ndim != 2 or view.shape[1] != groups * CT_SLOT_BYTES:
            raise DataError(f"a ckks view row holds {groups * CT_SLOT_BYTES} bytes, got shape "
                            f"{view.shape}; pass views made by this model")
        seal = sealapi()
        out = []
        for row in view:
            cts = []
            for g in range(groups):
                start = g * CT_SLOT_BYTES
                size = int.from_bytes(row[start:start + 8].tobytes(), "little")
                if not 0 < size <= CT_SLOT_BYTES - 8:
                    raise IntegrityError("a ckks view slot has a bad length; the view is "
                                         "corrupt or truncated")
                cts.append(_load(seal.Ciphertext(), ctx, row[start + 8:start + 8 + size].tobytes()))
            out.append(cts)
        return out

    def unpack(self, slot_vectors: list[np.ndarray]) -> np.ndarray:
        """The image back from its decrypted packed slot vectors (first channel's copy)."""
        plan, net = self.model.plan, self.model.net
        n, k, s = net.conv_out, net.kernel, net.stride
        image = np.zeros((net.image_size, net.image_size))
        positions = np.arange(n * n)
        ys, xs = (positions // n) * s, (positions % n) * s
        for g, vec in enumerate(slot_vectors):
            for kk in range(plan.per_group):
                element = g * plan.per_group + kk
                if element >= k * k:
                    break
                ky, kx = divmod(element, k)
                image[ys + ky, xs + kx] = vec[kk * plan.p:kk * plan.p + n * n]
        return image

    def _recover(self, view: np.ndarray, *, key: Key) -> np.ndarray:
        return self._decrypt_views(view, self.owner_keys(key))

    def _decrypt_views(self, view: np.ndarray, owner) -> np.ndarray:
        images = [self.unpack([owner.decrypt(ct) for ct in cts])
                  for cts in self.view_ciphertexts(view, owner.ctx)]
        return np.clip(np.stack(images), 0, 1)[:, None].astype(np.float32)

    def recover_bypassing_check(self, view: np.ndarray, key: Key) -> np.ndarray:
        """What an attacker gets decrypting with a key of its own (the ``wrong_key`` figure)."""
        from medveil.he.ckks import OwnerKeys

        return self._decrypt_views(view, OwnerKeys(key, self.he_params,
                                                   self.model.plan.rotation_steps))

    # -- the processor's task -------------------------------------------------------------
    def not_applicable_reason(self) -> str:
        sec = self.he_params.security()
        return (f"views are CKKS (RLWE) ciphertexts: N={sec['poly_modulus_degree']}, moduli "
                f"{sec['coeff_modulus_bits']} = {sec['total_modulus_bits']} bits <= "
                f"{sec['max_modulus_bits_128']} (128-bit, {sec['standard']}), scale "
                f"2^{sec['scale_bits']}; image attacks do not apply; the processor's context "
                "holds no secret key")

    def encrypted_utility(self, test: ImageSet, *, key: Key,
                          encrypted_model: bool | None = None) -> dict[str, Any]:
        """Encrypted inference over ``test``: the owner encrypts, the processor evaluates with
        the public context only, the owner decrypts the logits.

        Returns metrics from the decrypted logits, the plaintext model's metrics, the
        agreement of the two, the maximum logit error and timings per image.
        """
        from medveil.he.ckks import SealBackend
        from medveil.he.packing import evaluate_packed
        from medveil.metrics import classification_metrics, probabilities_from_logits

        self._require_fitted()
        owner = self.owner_keys(key)
        plan = self.model.plan
        enc_model = self.params["encrypted_model"] if encrypted_model is None else encrypted_model
        backend = SealBackend(owner.public, encrypted_model=enc_model)
        images = self.model.check_images(test.images)
        reference = self.model.net.forward(images)
        started = time.perf_counter()
        evaluate_packed(plan, [owner.encrypt(v) for v in plan.pack_image(images[0])], backend)
        compile_s = time.perf_counter() - started
        logits, enc_s, eval_s, dec_s = [], 0.0, 0.0, 0.0
        for image in images:
            t0 = time.perf_counter()
            cts = [owner.encrypt(v) for v in plan.pack_image(image)]
            t1 = time.perf_counter()
            out = evaluate_packed(plan, cts, backend)
            t2 = time.perf_counter()
            logits.append(owner.decrypt(out)[:plan.num_classes] / plan.output_scale)
            t3 = time.perf_counter()
            enc_s, eval_s, dec_s = enc_s + t1 - t0, eval_s + t2 - t1, dec_s + t3 - t2
        logits = np.stack(logits)
        n = len(images)

        return {"metrics": classification_metrics(probabilities_from_logits(logits), test.labels),
                "plaintext_metrics": classification_metrics(probabilities_from_logits(reference),
                                                            test.labels),
                "argmax_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
                "max_abs_logit_error": float(np.abs(logits - reference).max()),
                "images": n, "encrypted_model": enc_model, "compile_s": compile_s,
                "encrypt_ms_per_image": 1000 * enc_s / n, "eval_ms_per_image": 1000 * eval_s / n,
                "decrypt_ms_per_image": 1000 * dec_s / n,
                "latency_ms_per_image": 1000 * (enc_s + eval_s + dec_s) / n,
                "ciphertext_bytes_per_image": float(sum(len(owner.encrypt_bytes(v))
                                                        for v in plan.pack_image(images[0]))),
                "rotations_per_image": backend.rotations // (n + 1),
                "packing": plan.describe()}

    # -- state ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if self.model is None:
            return {}
        return {"he_model": np.frombuffer(self.model.to_bytes(), dtype=np.uint8)}

    def _load_state(self, state: dict[str, Any]) -> None:
        from medveil.he.model import HEModel

        self._owner = {}
        if state:
            self.model = HEModel.from_bytes(np.asarray(state["he_model"], dtype=np.uint8).tobytes())
