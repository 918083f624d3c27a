"""Folders on the wire: a streamed tar of a bundle's flat files, and its safe extraction.

Both ends treat what arrives as an adversary's: only regular files with flat
names a bundle can hold (``manifest.json``, ``{split}.{kind}.npy``,
``{name}.npy``) are extracted, within a size bound; anything else is refused
before a byte is written. The bundle is then verified against its manifest
(``medveil.store.open_store``) by the caller.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

from medveil.errors import IntegrityError

_FILE = re.compile(r"^(manifest\.json|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?\.npy)$")
_BLOCK = 512


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                  and _FILE.match(p.name))


def tar_size(folder: str | Path) -> int:
    """The exact byte length of :func:`tar_stream` (sent as Content-Length)."""
    total = 2 * _BLOCK
    for path in _files(Path(folder)):
        size = path.stat().st_size
        total += _BLOCK + size + (-size) % _BLOCK
    return total


def tar_stream(folder: str | Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A bundle folder as an uncompressed tar, produced file by file (never all in memory)."""
    for path in _files(Path(folder)):
        info = tarfile.TarInfo(path.name)
        info.size = path.stat().st_size
        info.mode = 0o600
        yield info.tobuf(format=tarfile.USTAR_FORMAT)
        with open(path, "rb") as handle:
            while data := handle.read(chunk):
                yield data
        if info.size % _BLOCK:
            yield b"\0" * (_BLOCK - info.size % _BLOCK)
    yield b"\0" * (2 * _BLOCK)


def _copy_private(source, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)
        handle.flush()
        os.fsync(handle.fileno())


def extract_bundle(archive: str | Path, into: Path, *, what: str) -> list[str]:
    """Extract a bundle tar into the (existing, private) folder ``into``, refusing any member
    that is not a regular file with a bundle's flat name."""
    names: list[str] = []
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                if not member.isfile() or not _FILE.match(member.name) or member.name in names:
                    raise IntegrityError(f"{what} holds {member.name[:60]!r}, which is not a file "
                                         "a medveil bundle holds; send the folder medveil wrote")
                source = tar.extractfile(member)
                if source is None:
                    raise IntegrityError(f"{what}: {member.name} cannot be read")
                _copy_private(source, into / member.name)
                names.append(member.name)
    except tarfile.TarError as exc:
        raise IntegrityError(f"{what} is not a complete tar stream ({exc}); send it again") \
            from None
    if "manifest.json" not in names:
        raise IntegrityError(f"{what} has no manifest.json; send the folder medveil wrote")
    return names
