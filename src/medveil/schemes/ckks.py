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

from collections.abc import Iterator
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError
from medveil.he.shipping import CT_SLOT_BYTES, pack_slots, slot_bytes, unpack_slots
from medveil.keys import Key
from medveil.schemes.base import Scheme, register


@register
class CKKSScheme(Scheme):
    name = "ckks"
    bench_cost = 0.7  # no image attacks; encrypted inference
    #: at the full budget every test image is encrypted and the teacher trains (the
    #: full bench on cxr64, one thread per row: 1099 s against plain's 722 s)
    bench_cost_by_budget = {"full": 1.5}
    invertible = True
    needs_fit = True
    protocol = "encrypted_inference"
    tasks = ("classification",)  # an encrypted CNN classifier
    deterministic_views = False
    fit_splits = ("train", "val")  # model selection on val, as the standard classifier's

    contract_params = {"epochs": 2}  # the contract checks behaviour (the teacher still trains)
    #: The cut budgets train the HE network from labels alone (no teacher), shorter; the
    #: demo's (a four-minute picture) evaluates the 5-level ``deep`` network at N = 8192,
    #: a quarter of ``wide_pool``'s seconds per encrypted image.
    cut_params = {"quick": {"epochs": 15, "distill": False},
                  "demo": {"epochs": 5, "distill": False, "architecture": "deep"}}

    def __init__(self, *, architecture: str = "auto", epochs: int = 30,
                 channels_per_segment: int | None = None, encrypted_model: bool = False,
                 distill: bool = True, distill_weight: float = 0.8,
                 teacher_epochs: int | str = "auto",
                 poly_modulus_degree: int | str = "auto",
                 coeff_bits: tuple[int, ...] | list[int] | None = None,
                 scale_bits: int | None = None) -> None:
        from medveil.he.ckks import CKKSParameters
        from medveil.he.model import checked_teacher_epochs
        from medveil.he.nets import ARCHITECTURES

        if architecture not in ("auto", *ARCHITECTURES):
            raise ConfigError(f"architecture must be auto or one of {', '.join(ARCHITECTURES)}, "
                              f"got {architecture!r}")
        if not 0.0 <= float(distill_weight) <= 1.0:
            raise ConfigError(f"distill_weight is the teacher's share of the loss, between 0 "
                              f"and 1; got {distill_weight}")
        teacher_epochs = checked_teacher_epochs(teacher_epochs)
        if isinstance(poly_modulus_degree, str) and poly_modulus_degree != "auto":
            raise ConfigError(f"poly_modulus_degree must be auto or a power of two such as "
                              f"8192, got {poly_modulus_degree!r}")
        explicit = poly_modulus_degree != "auto"
        if explicit != (coeff_bits is not None) or (scale_bits is not None and not explicit):
            raise ConfigError("give poly_modulus_degree, coeff_bits and scale_bits together, "
                              "or none of them (auto: planned from the network's depth)")
        if explicit:
            params = CKKSParameters(int(poly_modulus_degree), tuple(int(b) for b in coeff_bits),
                                    int(scale_bits if scale_bits is not None else 27))
            params.check()
            poly_modulus_degree, coeff_bits = params.poly_modulus_degree, list(params.coeff_bits)
            scale_bits = params.scale_bits
        super().__init__(architecture=architecture, epochs=int(epochs),
                         channels_per_segment=channels_per_segment,
                         encrypted_model=bool(encrypted_model), distill=bool(distill),
                         distill_weight=float(distill_weight), teacher_epochs=teacher_epochs,
                         poly_modulus_degree=poly_modulus_degree,
                         coeff_bits=coeff_bits, scale_bits=scale_bits)
        self.model = None
        self._owner: dict[str, Any] = {}

    # -- owner side -----------------------------------------------------------------
    @property
    def he_params(self):
        """The CKKS parameters: named ones, or (auto) the smallest the network's depth needs."""
        from medveil.he.ckks import CKKSParameters

        if self.params["poly_modulus_degree"] == "auto":
            return self.model.he_params
        return CKKSParameters(self.params["poly_modulus_degree"], tuple(self.params["coeff_bits"]),
                              self.params["scale_bits"])

    def _check_depth(self) -> None:
        params, depth = self.he_params, self.model.net.depth
        if params.depth < depth:
            raise ConfigError(f"the {self.model.info.get('architecture', 'HE')} network needs "
                              f"{depth} multiplicative levels; coeff_bits "
                              f"{list(params.coeff_bits)} give {params.depth}: add primes, or "
                              "leave the CKKS parameters to auto")

    def _fit(self, train: ImageSet, *, key: Key, seed: int) -> None:
        self.model = self.train_plaintext_model(train, seed=seed)
        self._check_depth()

    def train_plaintext_model(self, data: ImageSet, *, seed: int):
        """The HE network trained in plaintext on ``data``'s train split (val picks the
        checkpoint) with this scheme's parameters: the owner's model, and the same
        training for the membership attack's reference models."""
        from medveil.he.model import train_he_model

        model, _ = train_he_model(data, architecture=self.params["architecture"],
                                  epochs=self.params["epochs"], seed=seed,
                                  channels_per_segment=self.params["channels_per_segment"],
                                  slots=self.he_params_slots(),
                                  distill=self.params["distill"],
                                  distill_weight=self.params["distill_weight"],
                                  teacher_epochs=self.params["teacher_epochs"])
        return model

    def he_params_slots(self) -> int | None:
        """The slot count of named parameters (None: auto, the model's own)."""
        if self.params["poly_modulus_degree"] == "auto":
            return None
        return int(self.params["poly_modulus_degree"]) // 2

    def owner_keys(self, key: Key):
        """The CKKS key set derived from ``key`` (cached in memory, never in the state)."""
        from medveil.he.ckks import OwnerKeys

        self._check_key(key)
        if key.fingerprint not in self._owner:
            self._owner = {key.fingerprint: OwnerKeys(key, self.he_params,
                                                      self.model.plan.rotation_steps)}
        return self._owner[key.fingerprint]

    def view_spec(self, image_shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        if self.model is None:
            return (CT_SLOT_BYTES,), "uint8"
        return (self.model.plan.groups * self.view_slot_bytes,), "uint8"

    @property
    def view_slot_bytes(self) -> int:
        """Bytes per ciphertext in a view (seeded, top level, these parameters)."""
        return slot_bytes(self.he_params, seeded=True)

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        owner = self.owner_keys(key)
        plan = self.model.plan
        return pack_slots([[owner.encrypt_bytes(vec) for vec in plan.pack_image(image)]
                           for image in self.model.check_images(images)],
                          slot=self.view_slot_bytes)

    def view_ciphertexts(self, view: np.ndarray, ctx) -> Iterator[list[Any]]:
        """Parse a view array back into SEAL ciphertexts (any holder of the context), one
        image's at a time: a 128 px test split is about 10 GB of ciphertexts at once."""
        from medveil.he.shipping import load_ciphertexts

        for blobs in unpack_slots(view, per_row=self.model.plan.groups,
                                  slot=self.view_slot_bytes, what="ckks views"):
            yield load_ciphertexts(ctx, blobs)

    def processor_extras(self, key: Key) -> dict[str, np.ndarray]:
        """What the processor gets beside the ciphertexts: the public context (no secret
        key) and the model, its weights encrypted under the owner's public key when
        ``encrypted_model`` (else the folded model in clear)."""
        from medveil.he.shipping import context_extras, encrypt_weights

        owner = self.owner_keys(key)
        extras = context_extras(owner.public)
        if self.params["encrypted_model"]:
            extras.update(encrypt_weights(owner, self.model.plan))
        else:
            extras["ckks_he_model"] = np.frombuffer(self.model.to_bytes(), dtype=np.uint8).copy()
        return extras

    def decrypt_logits(self, blobs: list[bytes], *, key: Key) -> np.ndarray:
        """Owner: the processor's encrypted logits -> logits (N, classes)."""
        from medveil.he.ckks import _load, sealapi

        owner = self.owner_keys(key)
        seal, plan = sealapi(), self.model.plan
        return np.stack([owner.decrypt(_load(seal.Ciphertext(), owner.ctx, blob))
                         [:plan.num_classes] / plan.output_scale for blob in blobs])

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
