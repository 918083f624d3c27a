"""The owner / processor workflow on files: one function per `medveil ckks` command.

Owner: ``train`` an HE model, ``export_context`` (the processor's public context),
``encrypt_dataset``, and ``decrypt_results``. Processor: ``run_encrypted`` with the
public context only. Every file set carries the owner key's fingerprint and
per-blob SHA-256 digests, so a wrong key or a tampered file is an error, never
silent garbage; every output directory is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_directory
from medveil.errors import DataNotFoundError, IntegrityError, KeyMismatchError
from medveil.he.ckks import (
    CKKSParameters,
    OwnerKeys,
    PublicContext,
    SealBackend,
    _load,
    _save,
    sealapi,
)
from medveil.he.model import HEModel, train_he_model
from medveil.he.packing import evaluate_packed
from medveil.keys import Key

ENCRYPTED_FORMAT = "medveil.ckks-ciphertexts/1"


def model_digest(model: HEModel) -> str:
    return hashlib.sha256(model.to_bytes()).hexdigest()


def train(data, out: str | os.PathLike[str], *, architecture: str = "auto", epochs: int = 15,
          seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Owner: train the HE-friendly CNN in plaintext, fold it, save it (no key material)."""
    from medveil.metrics import classification_metrics, probabilities_from_logits

    model, _ = train_he_model(data, architecture=architecture, epochs=epochs, seed=seed,
                              progress=progress)
    test = data.split("test") if "test" in data.split_names else None
    summary: dict[str, Any] = {"architecture": model.info["architecture"],
                               "train_s": model.info["train_s"], "packing": model.plan.describe()}
    if test is not None and len(test):
        z = model.net.forward(model.check_images(test.images))
        summary["plaintext_test"] = classification_metrics(probabilities_from_logits(z),
                                                           test.labels)
    model.save(out)
    summary["model"] = str(out)
    return summary


def owner_keys(key: Key, model: HEModel, params: CKKSParameters | None = None) -> OwnerKeys:
    return OwnerKeys(key, params or CKKSParameters(), model.plan.rotation_steps)


def export_context(key: Key, model: HEModel, out: str | os.PathLike[str], *,
                   force: bool = False) -> Path:
    """Owner: write the processor's public context (public, relinearisation, rotation keys)."""
    owner = owner_keys(key, model)
    files = owner.public.to_bytes()
    meta = json.loads(files["meta.json"])
    meta["model_sha256"] = model_digest(model)
    files["meta.json"] = json.dumps(meta, indent=2).encode()
    with atomic_directory(out, force=force) as tmp:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
    return Path(out)


def load_context(path: str | os.PathLike[str]) -> tuple[PublicContext, dict[str, Any]]:
    path = Path(path)
    names = ("meta.json", "public.bin", "relin.bin", "galois.bin")
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise DataNotFoundError(f"{path} is not a ckks public context (missing "
                                f"{', '.join(missing)}); make one with `medveil ckks context`")
    files = {n: (path / n).read_bytes() for n in names}
    return PublicContext.from_bytes(files), json.loads(files["meta.json"])


def _write_blobs(out: str | os.PathLike[str], blobs: list[list[bytes]], meta: dict[str, Any], *,
                 force: bool) -> Path:
    digests = [[hashlib.sha256(b).hexdigest() for b in item] for item in blobs]
    with atomic_directory(out, force=force) as tmp:
        with open(tmp / "ciphertexts.bin", "wb") as fh:
            for item in blobs:
                for blob in item:
                    fh.write(len(blob).to_bytes(8, "little"))
                    fh.write(blob)
        meta = {**meta, "format": ENCRYPTED_FORMAT, "count": len(blobs),
                "per_item": len(blobs[0]) if blobs else 0, "sha256": digests}
        (tmp / "manifest.json").write_text(json.dumps(meta, indent=1))
    return Path(out)


def _read_blobs(path: str | os.PathLike[str]) -> tuple[list[list[bytes]], dict[str, Any]]:
    path = Path(path)
    if not (path / "manifest.json").is_file() or not (path / "ciphertexts.bin").is_file():
        raise DataNotFoundError(f"{path} holds no medveil ciphertexts (manifest.json and "
                                "ciphertexts.bin); make them with `medveil ckks encrypt`")
    meta = json.loads((path / "manifest.json").read_text())
    if meta.get("format") != ENCRYPTED_FORMAT:
        raise IntegrityError(f"{path}/manifest.json is not a {ENCRYPTED_FORMAT} manifest")
    data = (path / "ciphertexts.bin").read_bytes()
    offset, blobs = 0, []
    for i, digests in enumerate(meta["sha256"]):
        item = []
        for digest in digests:
            size = int.from_bytes(data[offset:offset + 8], "little")
            blob = data[offset + 8:offset + 8 + size]
            offset += 8 + size
            if hashlib.sha256(blob).hexdigest() != digest:
                raise IntegrityError(f"ciphertext {i} in {path} does not match its SHA-256: the "
                                     "file was changed or truncated; re-run the step that made it")
            item.append(blob)
        blobs.append(item)
    return blobs, meta


def encrypt_dataset(images: np.ndarray, key: Key, model: HEModel, out: str | os.PathLike[str],
                    *, force: bool = False, source: str = "") -> dict[str, Any]:
    """Owner: pack and encrypt each image (seeded symmetric ciphertexts)."""
    owner = owner_keys(key, model)
    images = model.check_images(images)
    started = time.perf_counter()
    blobs = [[owner.encrypt_bytes(vec) for vec in model.plan.pack_image(image)]
             for image in images]
    seconds = time.perf_counter() - started
    _write_blobs(out, blobs, {"kind": "images", "key_fingerprint": key.fingerprint,
                              "model_sha256": model_digest(model), "source": source}, force=force)
    size = sum(len(b) for item in blobs for b in item)
    return {"images": len(blobs), "bytes_per_image": size / max(1, len(blobs)),
            "ms_per_image": 1000 * seconds / max(1, len(blobs)), "out": str(out)}


def run_encrypted(context: str | os.PathLike[str], model: HEModel,
                  inputs: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  encrypted_model: bool = False, force: bool = False) -> dict[str, Any]:
    """Processor: evaluate the model on encrypted images with the public context only."""
    public, meta = load_context(context)
    blobs, manifest = _read_blobs(inputs)
    if manifest.get("key_fingerprint") != public.key_fingerprint:
        raise KeyMismatchError(f"the ciphertexts in {inputs} were made for key "
                               f"{manifest.get('key_fingerprint')}, the context in {context} for "
                               f"{public.key_fingerprint}; use the owner's matching context")
    digest = model_digest(model)
    if manifest.get("model_sha256") != digest or meta.get("model_sha256") != digest:
        raise IntegrityError("the ciphertexts, the context and the model do not belong together "
                             "(model SHA-256 differs); use the model the owner encrypted for")
    seal = sealapi()
    backend = SealBackend(public, encrypted_model=encrypted_model)
    results, started = [], time.perf_counter()
    for item in blobs:
        cts = [_load(seal.Ciphertext(), public.ctx, b) for b in item]
        results.append([_save(evaluate_packed(model.plan, cts, backend))])
    seconds = time.perf_counter() - started
    _write_blobs(out, results, {"kind": "logits", "key_fingerprint": public.key_fingerprint,
                                "model_sha256": digest, "encrypted_model": encrypted_model},
                 force=force)
    return {"images": len(results), "ms_per_image": 1000 * seconds / max(1, len(results)),
            "encrypted_model": encrypted_model, "out": str(out)}


def decrypt_results(key: Key, model: HEModel, results: str | os.PathLike[str]) -> np.ndarray:
    """Owner: the logits, decrypted."""
    blobs, manifest = _read_blobs(results)
    if manifest.get("kind") != "logits":
        raise IntegrityError(f"{results} holds encrypted images, not results; run "
                             "`medveil ckks run` on it first")
    if manifest.get("key_fingerprint") != key.fingerprint:
        raise KeyMismatchError(f"these results were made for key {manifest.get('key_fingerprint')}"
                               f", not {key.fingerprint}; pass the owner's key file")
    owner = owner_keys(key, model)
    seal = sealapi()
    plan = model.plan
    return np.stack([owner.decrypt(_load(seal.Ciphertext(), owner.ctx, item[0]))
                     [:plan.num_classes] / plan.output_scale for item in blobs])
