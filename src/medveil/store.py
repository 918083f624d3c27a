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
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medveil import __version__
from medveil.atomic import atomic_directory, write_private_file
from medveil.errors import DataError, IntegrityError, KeyMismatchError
from medveil.keys import Key
from medveil.manifest_schema import RELEASE_SCHEMA, RESULTS_SCHEMA, check_manifest
from medveil.npy import read_npy

STORE_FORMAT = "medveil.store/1"
RESULTS_FORMAT = "medveil.results/1"
MANIFEST = "manifest.json"
#: Shard and extra names: lower-case words, so a file name is always ``{split}.{kind}.npy``
#: or ``{name}.npy`` inside the folder, never a path.
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "manifest_hmac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(manifest: dict[str, Any], key: Key) -> str:
    return hmac.new(key.derive("store/manifest-hmac"), _canonical(manifest),
                    hashlib.sha256).hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def content_id(manifest: dict[str, Any]) -> str:
    """A digest of what a bundle holds (header and shard hashes, not when it was written).

    Results and models name the release they answer by this digest, so an owner can
    tell results for one release from results for another.
    """
    body = {k: v for k, v in manifest.items()
            if k not in ("manifest_hmac", "created", "medveil_version")}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode())


def _count(parts: dict[str, Any]) -> int:
    """Rows of a split: the length of its first array (every array of a split has as many
    rows: ``open_store`` checks it)."""
    return int(len(next(iter(parts.values()), ())))


def _plan(arrays: dict[str, dict[str, np.ndarray]], extras: dict[str, np.ndarray]
          ) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    files: list[tuple[str, bytes]] = []
    shards: list[dict[str, Any]] = []
    splits: dict[str, dict[str, Any]] = {}
    for split, parts in arrays.items():
        if not _NAME.match(split):
            raise ValueError(f"bad split name {split!r}")
        splits[split] = {"count": _count(parts)}
        for kind, array in parts.items():
            if not _NAME.match(kind):
                raise ValueError(f"bad shard kind {kind!r}")
            data = _npy_bytes(array)
            name = f"{split}.{kind}.npy"
            files.append((name, data))
            shards.append({"file": name, "split": split, "kind": kind,
                           "shape": list(array.shape), "dtype": str(array.dtype),
                           "bytes": len(data), "sha256": _sha256(data)})
    for kind, array in extras.items():
        if not _NAME.match(kind):
            raise ValueError(f"bad extra name {kind!r}")
        data = _npy_bytes(array)
        name = f"{kind}.npy"
        files.append((name, data))
        shards.append({"file": name, "split": None, "kind": kind, "shape": list(array.shape),
                       "dtype": str(array.dtype), "bytes": len(data), "sha256": _sha256(data)})
    return files, shards, splits


def build_manifest(*, arrays: dict[str, dict[str, np.ndarray]],
                   extras: dict[str, np.ndarray] | None = None, header: dict[str, Any],
                   key: Key | None, fmt: str = STORE_FORMAT
                   ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The manifest of a bundle and the shard files it lists (name, bytes)."""
    files, shards, splits = _plan(arrays, extras or {})
    manifest: dict[str, Any] = {
        "format": fmt,
        "medveil_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **header,
        "key_fingerprint": None if key is None else key.fingerprint,
        "splits": splits,
        "shards": shards,
    }
    if key is not None:
        manifest["manifest_hmac"] = _mac(manifest, key)
    return manifest, files


def write_bundle(out: str | os.PathLike[str], *, arrays: dict[str, dict[str, np.ndarray]],
                 extras: dict[str, np.ndarray] | None = None, header: dict[str, Any],
                 key: Key | None, fmt: str = STORE_FORMAT, force: bool = False,
                 inputs: tuple[Any, ...] = ()) -> dict[str, Any]:
    """Write ``arrays[split][kind]``, ``extras[name]`` and a manifest into ``out``, atomically;
    returns the manifest written (its shards are hashed once, here).

    Args:
        out: the folder; must not exist unless ``force``.
        arrays: per split, the view and whatever travels with it (labels, masks, ...).
        extras: arrays that belong to no split (a public context, encrypted weights).
        header: what the manifest says besides the shards (scheme, protocol, dataset).
        key: the owner's key, whose fingerprint and HMAC seal the manifest.
    """
    manifest, files = build_manifest(arrays=arrays, extras=extras, header=header, key=key,
                                     fmt=fmt)
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        for name, data in files:
            write_private_file(tmp / name, data)
        write_private_file(tmp / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def write_store(out: str | os.PathLike[str], *, arrays: dict[str, dict[str, np.ndarray]],
                scheme: dict[str, Any], dataset: dict[str, Any], key: Key | None,
                protocol: dict[str, Any], force: bool = False,
                extras: dict[str, np.ndarray] | None = None) -> Path:
    """A release: the views of every split with what travels beside them (see
    :func:`write_bundle`)."""
    header = {"scheme": scheme, "dataset": dataset, "protocol": protocol}
    write_bundle(out, arrays=arrays, extras=extras, header=header, key=key, force=force)
    return Path(out)


@dataclass
class ProtectedStore:
    """A verified, loaded bundle: a release (what leaves the owner) or a results set."""

    path: Path | None
    manifest: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def in_memory(cls, *, arrays: dict[str, dict[str, np.ndarray]],
                  extras: dict[str, np.ndarray] | None = None, header: dict[str, Any],
                  key: Key | None, fmt: str = STORE_FORMAT) -> ProtectedStore:
        """The bundle exactly as :func:`write_bundle` would write and ``open_store`` read it
        (the bench runs the workflow without the round trip through files)."""
        manifest, _ = build_manifest(arrays=arrays, extras=extras, header=header, key=key,
                                     fmt=fmt)
        return cls(path=None, manifest=manifest, arrays=arrays, extras=dict(extras or {}))

    @property
    def scheme_name(self) -> str:
        return str(self.manifest["scheme"]["name"])

    @property
    def protocol_name(self) -> str:
        protocol = self.manifest.get("protocol")
        name = protocol.get("name") if isinstance(protocol, dict) else None
        if not isinstance(name, str):
            raise IntegrityError(f"{self.label} names no protocol in its manifest; it is not "
                                 "a bundle this version of medveil wrote: re-protect the data")
        return name

    @property
    def content_id(self) -> str:
        return content_id(self.manifest)

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else "the release"

    @property
    def split_names(self) -> list[str]:
        return list(self.arrays)

    def part(self, split: str) -> dict[str, np.ndarray]:
        """One split's arrays; an absent split is a clear error."""
        if split not in self.arrays:
            raise DataError(f"{self.label} has no split '{split}' (it has "
                            f"{', '.join(self.arrays) or 'none'})")
        return self.arrays[split]


def is_store(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _read_manifest(path: Path, fmt: str = STORE_FORMAT) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if path.is_file():
        raise IntegrityError(f"{path} is a file, not a medveil {_what(fmt)} folder; pass the "
                             "folder `medveil protect` (or `predict`) wrote")
    if not path.is_dir():
        raise IntegrityError(f"{path} is not a medveil {_what(fmt)} folder (it does not exist)")
    if not manifest_path.is_file():
        raise IntegrityError(
            f"{path} has no {MANIFEST}: it is not a medveil {_what(fmt)} or it is incomplete; "
            "re-run the command that wrote it"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise IntegrityError(f"{manifest_path} is corrupt (not JSON); re-run the command that "
                             "wrote it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IntegrityError(f"{manifest_path} is not a {fmt} manifest"
                             + (f" (it is {str(found)[:40]})" if found else ""))
    return manifest


def _what(fmt: str) -> str:
    return "results set" if fmt == RESULTS_FORMAT else "release"


def _forged(path: Path, why: str) -> IntegrityError:
    return IntegrityError(f"{path / MANIFEST} is not authentic: {why}; do not use this "
                          "release, re-protect the data")


def _authenticate(path: Path, manifest: dict[str, Any], key: Key) -> None:
    """With the owner's key, a manifest must carry the key's fingerprint and a valid HMAC:
    a missing one is a forgery, not an unsigned store."""
    expected = manifest.get("key_fingerprint")
    if expected is None:
        raise _forged(path, "it names no key fingerprint although a key was given (a "
                            "release made with a key always names it)")
    if not isinstance(expected, str) or expected != key.fingerprint:
        raise KeyMismatchError(
            f"wrong key for store {path}: it was protected with key {str(expected)[:12]}..., "
            f"this key is {key.fingerprint[:12]}...; use the key file it was made with"
        )
    recorded = manifest.get("manifest_hmac")
    if not isinstance(recorded, str):
        raise _forged(path, "its HMAC is missing")
    if not hmac.compare_digest(recorded, _mac(manifest, key)):
        raise _forged(path, "its HMAC does not match (the manifest has been altered)")


_SHARD_FIELDS = {"file": str, "kind": str, "shape": list, "dtype": str, "bytes": int,
                 "sha256": str}


def _checked_shards(path: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's shard entries, each well-formed and naming exactly its own file
    (``{split}.{kind}.npy`` or ``{kind}.npy``) inside the folder; no duplicates."""
    shards = manifest.get("shards")
    splits = manifest.get("splits")
    if not isinstance(shards, list) or not isinstance(splits, dict):
        raise IntegrityError(f"{path / MANIFEST} has no valid 'shards' list and 'splits' "
                             "table; re-run the command that wrote it")
    seen: set[str] = set()
    for index, shard in enumerate(shards):
        if not isinstance(shard, dict):
            raise IntegrityError(f"{path / MANIFEST}: shard entry {index} is not an object")
        for name, kind in _SHARD_FIELDS.items():
            value = shard.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise IntegrityError(f"{path / MANIFEST}: shard entry {index} has no valid "
                                     f"'{name}'; the manifest is damaged or forged")
        split = shard.get("split")
        if split is not None and (not isinstance(split, str) or not _NAME.match(split)):
            raise IntegrityError(f"{path / MANIFEST}: shard entry {index} has a bad split name")
        if not _NAME.match(shard["kind"]):
            raise IntegrityError(f"{path / MANIFEST}: shard entry {index} has a bad kind name")
        expected = f"{shard['kind']}.npy" if split is None else f"{split}.{shard['kind']}.npy"
        if shard["file"] != expected:
            raise IntegrityError(
                f"{path / MANIFEST}: shard entry {index} points at {shard['file'][:80]!r}, "
                f"not {expected!r} inside the store; the manifest is forged")
        if split is not None and split not in splits:
            raise IntegrityError(f"{path / MANIFEST}: shard {expected} belongs to split "
                                 f"'{split}', which the manifest does not list")
        if expected in seen:
            raise IntegrityError(f"{path / MANIFEST} lists shard {expected} twice")
        seen.add(expected)
    for split, info in splits.items():
        if not isinstance(info, dict) or not isinstance(info.get("count"), int):
            raise IntegrityError(f"{path / MANIFEST}: split '{str(split)[:40]}' has no count")
    present = {entry.name for entry in path.iterdir()} - {MANIFEST}
    unlisted = sorted(present - seen)
    if unlisted:
        raise IntegrityError(
            f"{path} holds file(s) its manifest does not list ({', '.join(unlisted[:3])}); "
            "a release holds only what medveil wrote: re-protect the data")
    return shards


def open_store(path: str | os.PathLike[str], *, key: Key | None = None,
               fmt: str = STORE_FORMAT) -> ProtectedStore:
    """Load a bundle, re-hashing every shard.

    With ``key`` the manifest must name that key and carry a valid HMAC (anything
    else is a forgery); without one only integrity is checked (shards match the
    manifest), not who wrote it.
    """
    path = Path(path)
    manifest = _read_manifest(path, fmt)
    check_manifest(manifest, RESULTS_SCHEMA if fmt == RESULTS_FORMAT else RELEASE_SCHEMA,
                   where=str(path / MANIFEST))
    if key is not None:
        _authenticate(path, manifest, key)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    extras: dict[str, np.ndarray] = {}
    for shard in _checked_shards(path, manifest):
        file = path / shard["file"]
        if file.is_symlink() or not file.is_file():
            raise IntegrityError(f"store {path} is missing shard {shard['file']} (or it is not "
                                 "a plain file); re-protect it")
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
        # the header is checked against the manifest and the bytes before np.load
        # allocates anything (a forged header can declare terabytes)
        array = read_npy(data, where=f"shard {file}", shape=shard["shape"],
                         dtype=shard["dtype"])
        if shard.get("split") is None:
            extras[shard["kind"]] = array
        else:
            arrays.setdefault(shard["split"], {})[shard["kind"]] = array
    for split, info in manifest["splits"].items():
        parts = arrays.get(split, {})
        if not parts or _count(parts) != info["count"] or any(
                len(a) != info["count"] for a in parts.values() if a.ndim):
            raise IntegrityError(f"store {path}: split '{split}' does not hold {info['count']} "
                                 "rows in every shard as its manifest says")
    return ProtectedStore(path=path, manifest=manifest, arrays=arrays, extras=extras)


def verify_store(path: str | os.PathLike[str], *, key: Key | None = None) -> dict[str, Any]:
    """Re-hash everything; return a summary or raise :class:`IntegrityError`."""
    store = open_store(path, key=key)
    return {
        "path": str(store.path),
        "scheme": store.manifest["scheme"],
        "key_fingerprint": store.manifest.get("key_fingerprint"),
        "splits": store.manifest["splits"],
        "shards": len(store.manifest["shards"]),
        "authenticated": key is not None,
    }
