"""The bench's content-addressed cache: fitted schemes and whole rows, reused across
rows and runs.

An entry's address is the SHA-256 of everything its content depends on: its kind,
the digest of the data it was made from, the scheme and its parameters, the seed,
the key's fingerprint, the budget where it matters, and the digest of the code (every
file of the installed medveil package), so a change of any of them misses instead of
reusing a stale entry. What is cached:

- ``owner_fit``: the owner's fitted scheme (``Scheme.state_dict``, never key bytes),
  keyed by the victim key's fingerprint;
- ``shadow_fit``: the shadow-key attacker's own fit on public images, keyed by the
  attacker's key: it never reads an owner entry (another key is another address);
- ``row``: a whole row of a scheme that fits nothing (``plain`` and the reference
  schemes): a function of the data, its parameters, the budget, the seed and the code.

The cache holds networks fitted on patients' images and a row's pictures of them:
its folder is 0700 and its files 0600, like the owner's state; delete it at will
(``rm -r``), nothing else points into it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medveil import __version__
from medveil.errors import ConfigError, IntegrityError, MedveilError

PACKAGE = Path(__file__).parent
ROW_FILE, PICTURES_FILE = "row.json", "pictures.npz"
#: each test image's outcome (probabilities, or Dice and IoU): the paired comparisons'
PER_IMAGE_FILE = "per_image.npz"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 over the medveil package's source (paths and contents) and version: any
    edit of the code is another digest, so no entry outlives the code that made it."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json"):
            digest.update(str(path.relative_to(PACKAGE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fit_scheme(cache: BenchCache | None, kind: str, scheme: Any, train: Any, *, key: Any,
               seed: int, **fit_kwargs: Any) -> tuple[Any, bool]:
    """Fit ``scheme`` on ``train``, through ``cache`` where there is one and the scheme
    learns something (``needs_fit``); returns the fitted scheme and whether the cache
    served it."""
    if cache is None or not scheme.needs_fit:
        scheme.fit(train, key=key, seed=seed, **fit_kwargs)
        return scheme, False
    return cache.fitted(kind, scheme, train, key=key, seed=seed, **fit_kwargs)


def data_digest(data: Any) -> str | None:
    """SHA-256 of an image set's images, splits, labels and masks (None for None)."""
    if data is None:
        return None
    digest = hashlib.sha256()
    for array in (data.images, data.splits.astype(str), data.labels, data.masks):
        if array is not None:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


class BenchCache:
    """A cache folder the user names (``medveil bench --cache DIR``)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        if folder.is_symlink() or folder.is_file():
            raise ConfigError(f"--cache {folder} is a file or a link; give a folder for the "
                              "bench's cache")
        if not folder.parent.is_dir():
            raise ConfigError(f"--cache: folder {folder.parent} does not exist; create it "
                              "first")
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        self.folder = folder

    def address(self, kind: str, **parts: Any) -> Path:
        """The entry's folder: kind/SHA-256 of the parts and the code's digest."""
        text = json.dumps({"kind": kind, "code": code_digest(), **parts}, sort_keys=True,
                          default=str)
        return self.folder / kind / hashlib.sha256(text.encode()).hexdigest()

    # fitted schemes -------------------------------------------------------------------

    def fitted(self, kind: str, scheme: Any, train: Any, *, key: Any, seed: int,
               **fit_kwargs: Any) -> tuple[Any, bool]:
        """``scheme`` fitted on ``train`` (``fit_kwargs``: ``public`` images), or the same
        fit loaded from the cache; and whether it came from the cache."""
        from medveil.owner_state import is_owner_state, load_owner_state, save_owner_state

        where = self.address(kind, data=data_digest(train),
                             public=data_digest(fit_kwargs.get("public")),
                             scheme=scheme.name, version=scheme.version,
                             params=scheme.params, seed=seed, key=key.fingerprint)
        if is_owner_state(where):
            try:
                return load_owner_state(where, key=key), True
            except MedveilError:  # a damaged entry: fit again and replace it
                shutil.rmtree(where, ignore_errors=True)
        scheme.fit(train, key=key, seed=seed, **fit_kwargs)
        where.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            save_owner_state(where, scheme, protocol=scheme.protocol)
        except MedveilError:  # another worker wrote the same entry first: same content
            pass
        return scheme, False

    # whole rows -----------------------------------------------------------------------

    def row_address(self, data: Any, spec: Any, budget: dict[str, Any], seed: int) -> Path:
        return self.address("row", data=data_digest(data), scheme=spec.name,
                            params=dict(spec.params), budget=budget, seed=seed)

    def load_row(self, where: Path) -> dict[str, Any] | None:
        """A cached row with its pictures, or None where there is none (or it is damaged)."""
        if not (where / ROW_FILE).is_file():
            return None
        try:
            row = json.loads((where / ROW_FILE).read_text(encoding="utf-8"))
            with np.load(where / PICTURES_FILE, allow_pickle=False) as archive:
                row["_pictures"] = {name: archive[name] for name in archive.files}
            if (where / PER_IMAGE_FILE).is_file():
                with np.load(where / PER_IMAGE_FILE, allow_pickle=False) as archive:
                    row["_per_image"] = {name: archive[name] for name in archive.files}
            return row
        except (OSError, ValueError, KeyError) as exc:
            raise IntegrityError(f"cache entry {where} is damaged ({type(exc).__name__}); "
                                 "delete the cache folder") from None

    def save_row(self, where: Path, row: dict[str, Any]) -> None:
        from medveil.atomic import atomic_directory, write_private_file

        record = {k: v for k, v in row.items() if not k.startswith("_")}
        buffer, per_image = io.BytesIO(), io.BytesIO()
        np.savez(buffer, **(row.get("_pictures") or {}))
        np.savez(per_image, **(row.get("_per_image") or {}))
        where.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            with atomic_directory(where, marker="bench-cache") as tmp:
                write_private_file(tmp / ROW_FILE,
                                   (json.dumps(record, default=float) + "\n").encode())
                write_private_file(tmp / PICTURES_FILE, buffer.getvalue())
                write_private_file(tmp / PER_IMAGE_FILE, per_image.getvalue())
        except MedveilError:  # another worker wrote it first
            pass
