"""A protected data set on disk: ``manifest.json`` plus one ``.npy`` shard per array.

The manifest records the scheme, its parameters, the key's fingerprint and a
SHA-256 per shard; an HMAC keyed from the owner's key seals the manifest
itself, so that a key holder can tell a forged manifest from a real one.
Loading re-hashes every shard: a tampered or truncated store is an
:class:`IntegrityError`, never silently different data.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medveil import __version__
from medveil.atomic import atomic_directory
from medveil.data.imageset import ImageSet
from medveil.errors import IntegrityError, KeyMismatchError
from medveil.keys import Key

STORE_FORMAT = "medveil.store/1"
MANIFEST = "manifest.json"
SHARD_KINDS = ("view", "labels", "masks", "encoded_masks")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "manifest_hmac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(manifest: dict[str, Any], key: Key) -> str:
    return hmac.new(key.derive("store/manifest-hmac"), _canonical(manifest),
                    hashlib.sha256).hexdigest()


def write_store(out: str | os.PathLike[str], *, arrays: dict[str, dict[str, np.ndarray]],
                scheme: dict[str, Any], dataset: dict[str, Any], key: Key | None,
                force: bool = False) -> Path:
    """Write ``arrays[split][kind]`` and a manifest into ``out``, atomically.

    Args:
        out: the store folder; must not exist unless ``force``.
        arrays: per split, the view and whatever travels with it (labels, masks).
        scheme: name, version and params of the scheme that made the views.
        dataset: name, task, image shape, class names of the source data.
        key: the owner's key, whose fingerprint and HMAC seal the manifest.
    """
    shards = []
    splits: dict[str, dict[str, Any]] = {}
    with atomic_directory(out, force=force) as tmp:
        for split, parts in arrays.items():
            splits[split] = {"count": int(len(parts["view"]))}
            for kind, array in parts.items():
                if kind not in SHARD_KINDS:
                    raise ValueError(f"unknown shard kind {kind}")
                buffer = io.BytesIO()
                np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
                data = buffer.getvalue()
                name = f"{split}.{kind}.npy"
                with open(tmp / name, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                shards.append({"file": name, "split": split, "kind": kind,
                               "shape": list(array.shape), "dtype": str(array.dtype),
                               "bytes": len(data), "sha256": _sha256(data)})
        manifest: dict[str, Any] = {
            "format": STORE_FORMAT,
            "medveil_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "scheme": scheme,
            "key_fingerprint": None if key is None else key.fingerprint,
            "dataset": dataset,
            "splits": splits,
            "shards": shards,
        }
        if key is not None:
            manifest["manifest_hmac"] = _mac(manifest, key)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(out)


@dataclass
class ProtectedStore:
    """A verified, loaded protected store."""

    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]

    @property
    def scheme_name(self) -> str:
        return str(self.manifest["scheme"]["name"])

    @property
    def split_names(self) -> list[str]:
        return list(self.arrays)

    def as_imageset(self) -> ImageSet:
        """The views as an :class:`ImageSet`, for processors that train on image views."""
        views, labels, masks, splits = [], [], [], []
        for split, parts in self.arrays.items():
            view = parts["view"]
            if view.ndim != 4 or view.dtype != np.float32:
                raise IntegrityError(
                    f"store {self.path} holds '{self.scheme_name}' views shaped {view.shape} "
                    f"{view.dtype}, which are not images; this scheme's task runs another way"
                )
            views.append(view)
            splits.append(np.full(len(view), split))
            if "labels" in parts:
                labels.append(parts["labels"])
            if "masks" in parts:
                masks.append(parts["masks"])
        dataset = self.manifest.get("dataset", {})
        n = sum(len(v) for v in views)
        return ImageSet(
            images=np.clip(np.concatenate(views), 0.0, 1.0),
            splits=np.concatenate(splits), ids=np.array([f"row{i}" for i in range(n)]),
            labels=np.concatenate(labels) if labels else None,
            masks=np.concatenate(masks) if masks else None,
            class_names=dataset.get("class_names"),
            meta={"name": f"{dataset.get('name', 'store')}[{self.scheme_name}]",
                  "source": str(self.path), "reader": "store",
                  "scheme": self.manifest["scheme"],
                  "key_fingerprint": self.manifest.get("key_fingerprint")},
        )


def is_store(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise IntegrityError(f"{path} is not a protected store folder (it does not exist)")
    if not manifest_path.is_file():
        raise IntegrityError(
            f"{path} has no {MANIFEST}: it is not a medveil store or it is incomplete; "
            "re-run `medveil protect`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IntegrityError(f"{manifest_path} is corrupt (not JSON); re-run `medveil protect`") \
            from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise IntegrityError(f"{manifest_path} is not a {STORE_FORMAT} manifest")
    return manifest


def open_store(path: str | os.PathLike[str], *, key: Key | None = None) -> ProtectedStore:
    """Load a store, re-hashing every shard; check the key's fingerprint if one is given."""
    path = Path(path)
    manifest = _read_manifest(path)
    if key is not None:
        expected = manifest.get("key_fingerprint")
        if expected is not None and expected != key.fingerprint:
            raise KeyMismatchError(
                f"wrong key for store {path}: it was protected with key {expected[:12]}..., "
                f"this key is {key.fingerprint[:12]}...; use the key file it was made with"
            )
        recorded = manifest.get("manifest_hmac")
        if expected is not None and (recorded is None or
                                     not hmac.compare_digest(recorded, _mac(manifest, key))):
            raise IntegrityError(f"{path / MANIFEST} has been altered: its HMAC does not match")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for shard in manifest.get("shards", []):
        file = path / shard["file"]
        if not file.is_file():
            raise IntegrityError(f"store {path} is missing shard {shard['file']}; re-protect it")
        data = file.read_bytes()
        if len(data) != shard["bytes"]:
            raise IntegrityError(
                f"shard {file} is {len(data)} bytes, the manifest says {shard['bytes']}: "
                "the store is truncated or tampered with; re-protect it"
            )
        if _sha256(data) != shard["sha256"]:
            raise IntegrityError(
                f"shard {file} does not match its SHA-256 in the manifest: the store has been "
                "tampered with; re-protect it"
            )
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if list(array.shape) != shard["shape"] or str(array.dtype) != shard["dtype"]:
            raise IntegrityError(f"shard {file} does not have the shape / dtype of the manifest")
        arrays.setdefault(shard["split"], {})[shard["kind"]] = array
    for split, info in manifest.get("splits", {}).items():
        if split not in arrays or len(arrays[split].get("view", ())) != info["count"]:
            raise IntegrityError(f"store {path}: split '{split}' does not hold {info['count']} "
                                 "views as its manifest says")
    return ProtectedStore(path=path, manifest=manifest, arrays=arrays)


def verify_store(path: str | os.PathLike[str], *, key: Key | None = None) -> dict[str, Any]:
    """Re-hash everything; return a summary or raise :class:`IntegrityError`."""
    store = open_store(path, key=key)
    return {
        "path": str(store.path),
        "scheme": store.manifest["scheme"],
        "key_fingerprint": store.manifest.get("key_fingerprint"),
        "splits": store.manifest["splits"],
        "shards": len(store.manifest["shards"]),
        "hmac_checked": key is not None and store.manifest.get("key_fingerprint") is not None,
    }
