"""A forger who knows the bundle format but not the key: edit manifests, reseal shards."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np


def edit_manifest(folder: Path, edit) -> None:
    """Apply ``edit(manifest)`` to ``folder/manifest.json`` in place."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def reseal_shard(folder: Path, shard_file: str, array: np.ndarray) -> None:
    """Replace a shard and write its new hash, size, shape and dtype into the manifest."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    data = buffer.getvalue()
    (folder / shard_file).write_bytes(data)

    def edit(manifest):
        for shard in manifest["shards"]:
            if shard["file"] == shard_file:
                shard.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                             shape=list(array.shape), dtype=str(array.dtype))
    edit_manifest(folder, edit)


def swap_views(folder: Path, manifest: dict) -> None:
    """Exchange the train and test views' files, and their entries' hashes and counts,
    consistently (``manifest`` is edited; write it back with :func:`edit_manifest`)."""
    a, b = folder / "train.view.npy", folder / "test.view.npy"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    entries = {s["file"]: s for s in manifest["shards"]}
    ea, eb = entries["train.view.npy"], entries["test.view.npy"]
    for field in ("sha256", "bytes", "shape", "dtype"):
        ea[field], eb[field] = eb[field], ea[field]
    splits = manifest["splits"]
    splits["train"]["count"], splits["test"]["count"] = (splits["test"]["count"],
                                                         splits["train"]["count"])
