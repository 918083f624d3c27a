"""What a ckks release carries, as arrays: ciphertexts, the public context, the model.

One ciphertext format everywhere: a row of fixed-size slots, each an 8-byte
little-endian length and a SEAL-serialised ciphertext (zstd), so that the images
of a split, the processor's logits and the encrypted weights stack into arrays
and travel as shards of a release or a results set, hashed by its manifest.

The model travels one of two ways. Plain model: the folded network's bytes (the
processor sees the weights). Encrypted model (Ran and Li 2025's setting, the
default of ``medveil protect --scheme ckks --param encrypted_model=true``): the
owner runs the packed evaluation once on an encrypted blank image with a backend
that encrypts every weight and bias vector under its public key as the evaluation
first needs it (at the level and scale it is needed at), and ships those
ciphertexts by name with the network's *structure* (slot counts, blocks, rotation
steps, no weight values). The processor evaluates with them and never sees a
weight in clear.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from medveil.errors import IntegrityError
from medveil.he.ckks import CKKSParameters, PublicContext, SealBackend, _load, _save, sealapi
from medveil.he.packing import DenseStage, PackedPlan, evaluate_packed


def slot_bytes(params: CKKSParameters, *, seeded: bool) -> int:
    """Bytes reserved per serialised ciphertext of ``params`` at the top level.

    zstd stores each coefficient in about its prime's bits; 1.5 times that, rounded
    up to a power of two, bounds it: a seeded N = 8192 ciphertext (one polynomial
    and a seed) serialises to about 214 KB in 256 KiB, a full one (public-key
    encrypted: two polynomials) to about 430 KB in 512 KiB; N = 16384 with seven
    30-bit levels: 1 MiB and 2 MiB.
    """
    bits = sum(params.coeff_bits[:-1])  # the special prime is not stored
    bound = 1.5 * params.poly_modulus_degree * bits / 8 * (1 if seeded else 2)
    return 1 << math.ceil(math.log2(bound))


#: The default parameters' slots (logits ciphertexts, at the lowest level, always fit).
CT_SLOT_BYTES = slot_bytes(CKKSParameters(), seeded=True)

CONTEXT_FILES = {"meta.json": "ckks_context_meta", "public.bin": "ckks_public_key",
                 "relin.bin": "ckks_relin_keys", "galois.bin": "ckks_galois_keys"}


def _u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def pack_slots(items: list[list[bytes]], *, slot: int = CT_SLOT_BYTES) -> np.ndarray:
    """Rows of length-prefixed blobs, ``len(items[i])`` slots of ``slot`` bytes each."""
    width = max((len(i) for i in items), default=0)
    out = np.zeros((len(items), width * slot), dtype=np.uint8)
    for row, blobs in enumerate(items):
        for g, blob in enumerate(blobs):
            if len(blob) + 8 > slot:
                raise AssertionError(f"a ciphertext of {len(blob)} B exceeds its {slot} B slot")
            start = g * slot
            out[row, start:start + 8] = _u8(len(blob).to_bytes(8, "little"))
            out[row, start + 8:start + 8 + len(blob)] = _u8(blob)
    return out


def unpack_slots(array: np.ndarray, *, per_row: int, slot: int = CT_SLOT_BYTES,
                 what: str = "ciphertexts") -> list[list[bytes]]:
    """The blobs of :func:`pack_slots`; a bad shape, length or trailing byte is an error."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != per_row * slot:
        raise IntegrityError(f"{what}: expected rows of {per_row} x {slot} bytes, got "
                             f"{array.shape} {array.dtype}; they are not from this model")
    out = []
    for row in array:
        blobs = []
        for g in range(per_row):
            start = g * slot
            size = int.from_bytes(row[start:start + 8].tobytes(), "little")
            if not 0 < size <= slot - 8:
                raise IntegrityError(f"{what}: a slot has a bad length; they are corrupt")
            if row[start + 8 + size:start + slot].any():
                raise IntegrityError(f"{what}: bytes after a ciphertext in its slot; they "
                                     "were tampered with")
            blobs.append(row[start + 8:start + 8 + size].tobytes())
        out.append(blobs)
    return out


def load_ciphertexts(ctx: Any, blobs: list[bytes]) -> list[Any]:
    """One image's slot blobs (a row of :func:`unpack_slots`) as SEAL ciphertexts: callers
    load one image at a time (a 128 px test split is about 10 GB of ciphertexts at once)."""
    seal = sealapi()
    return [_load(seal.Ciphertext(), ctx, blob) for blob in blobs]


def context_extras(public: PublicContext) -> dict[str, np.ndarray]:
    return {CONTEXT_FILES[name]: _u8(blob) for name, blob in public.to_bytes().items()}


def load_public(extras: dict[str, np.ndarray]) -> PublicContext:
    missing = [k for k in CONTEXT_FILES.values() if k not in extras]
    if missing:
        raise IntegrityError(f"the release has no ckks public context ({', '.join(missing)} "
                             "missing); it was not made by `medveil protect --scheme ckks`")
    return PublicContext.from_bytes({name: extras[k].tobytes()
                                     for name, k in CONTEXT_FILES.items()})


def plan_structure(plan: PackedPlan) -> dict[str, Any]:
    """The packed network's shape only: what the processor needs to run encrypted weights."""
    return {"slots": plan.slots, "cps": plan.cps, "p": plan.p, "segments": plan.segments,
            "groups": plan.groups, "per_group": plan.per_group, "block": plan.block,
            "baby": plan.baby, "giant": plan.giant, "num_classes": plan.num_classes,
            "middle": [[m.block, m.baby, m.giant] for m in plan.middle]}


def skeleton_plan(structure: dict[str, Any], names: list[tuple]) -> PackedPlan:
    """A plan with no weight values (the backend has them encrypted).

    A product the owner's evaluation made (its name among ``names``) has vector
    None; one it skipped (an all-zero vector of a sparse layer) is absent, so the
    processor skips it too.
    """
    middle_shapes = structure.get("middle", [])
    s = {k: int(v) for k, v in structure.items() if k != "middle"}
    hidden = {tuple(n[1:]): None for n in names if n[0] == "hidden"}
    middle = [DenseStage(int(block), int(baby), int(giant),
                         {tuple(n[2:]): None for n in names if n[0] == "middle" and n[1] == i},
                         None)
              for i, (block, baby, giant) in enumerate(middle_shapes)]
    return PackedPlan(slots=s["slots"], cps=s["cps"], p=s["p"], segments=s["segments"],
                      groups=s["groups"], per_group=s["per_group"], block=s["block"],
                      baby=s["baby"], giant=s["giant"],
                      first=[[None] * s["groups"] for _ in range(s["segments"])],
                      first_bias=[None] * s["segments"], hidden=hidden, hidden_bias=None,
                      final=[None] * s["num_classes"], final_bias=None,
                      num_classes=s["num_classes"], output_scale=1.0, net=None, middle=middle)


def encrypt_weights(owner, plan: PackedPlan) -> dict[str, np.ndarray]:
    """Owner: every weight and bias vector, encrypted at the level the evaluation needs it."""
    backend = SealBackend(owner.public, encrypted_model=True)
    blank = [owner.encrypt(np.zeros(plan.slots)) for _ in range(plan.groups)]
    evaluate_packed(plan, blank, backend)
    names = list(backend._cache)  # noqa: SLF001 - filled in evaluation order
    blobs = [[_save(backend._cache[name])] for name in names]  # noqa: SLF001
    structure = {**plan_structure(plan), "weights": [list(n) for n in names]}
    return {"ckks_model_structure": _u8(json.dumps(structure).encode()),
            "ckks_model_weights": pack_slots(blobs, slot=slot_bytes(owner.params, seeded=False))}


def processor_backend(extras: dict[str, np.ndarray], public: PublicContext
                      ) -> tuple[PackedPlan, SealBackend, dict[str, Any]]:
    """The processor's plan and backend from a release: the plain model, or the structure
    and the encrypted weights. Returns what the model is, for the results' record."""
    if "ckks_model_weights" in extras:
        try:
            structure = json.loads(extras["ckks_model_structure"].tobytes())
            names = [tuple(n) for n in structure.pop("weights")]
        except (KeyError, ValueError, TypeError):
            raise IntegrityError("the release's encrypted model has no readable structure; "
                                 "re-protect it") from None
        blobs = unpack_slots(extras["ckks_model_weights"], per_row=1,
                             slot=slot_bytes(public.params, seeded=False),
                             what="encrypted weights")
        if len(blobs) != len(names):
            raise IntegrityError(f"{len(blobs)} encrypted weights for {len(names)} names")
        seal = sealapi()
        weights = {name: _load(seal.Ciphertext(), public.ctx, item[0])
                   for name, item in zip(names, blobs, strict=True)}
        backend = SealBackend(public, encrypted_model=True, weights=weights)
        return skeleton_plan(structure, names), backend, {"encrypted_model": True}
    if "ckks_he_model" in extras:
        from medveil.he.model import HEModel

        model = HEModel.from_bytes(extras["ckks_he_model"].tobytes(), source="the release")
        return model.plan, SealBackend(public), {"encrypted_model": False}
    raise IntegrityError("the release carries no ckks model (plain or encrypted); re-protect it")
