"""Folders on the wire: a streamed tar of a bundle's flat files, and its safe extraction.

Both ends treat what arrives as an adversary's: the server an upload, the client
a processor's results. Every header is read and judged before a byte is
written: only plain regular files (no GNU sparse member, no PAX header that
declares a size or a sparse map, no link, device or folder) with flat names a
bundle can hold (``manifest.json``, ``{split}.{kind}.npy``, ``{name}.npy``),
each declared size and their sum within the caller's bound. A tar's headers
declare sizes its bytes need not have (a sparse map expands a few KB into
hundreds of MiB), so the bytes actually written are counted as well, and a
refusal leaves nothing behind. The bundle is then verified against its
manifest (``medveil.store.open_store``) by the caller.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from medveil.errors import IntegrityError
from medveil.limits import DEFAULT_MAX_DOWNLOAD_MB

#: used with ``fullmatch`` (``$`` would let "manifest.json\n" through)
_FILE = re.compile(r"manifest\.json|[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63})?\.npy")
_BLOCK = 512
#: More members than any bundle holds (a manifest and a shard per split and kind).
MAX_MEMBERS = 1024
#: The bound of :func:`extract_bundle` where a caller names none (the client's default
#: ``--max-download-mb``); the server passes its ``--max-upload-mb``.
DEFAULT_MAX_BYTES = DEFAULT_MAX_DOWNLOAD_MB * 2**20
#: PAX keys that change nothing about what is written (Python's tarfile and GNU tar add
#: them); any other (``size``, ``GNU.sparse.*``, ``linkpath``, ...) is refused.
_HARMLESS_PAX = frozenset({"path", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname",
                           "comment", "hdrcharset"})
_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class BundleTooLargeError(IntegrityError):
    """A bundle on the wire declares or holds more bytes than the receiver accepts."""


def archive_bound(max_bytes: int) -> int:
    """The most bytes a tar of at most ``max_bytes`` of bundle files takes on the wire
    (a header, PAX header and padding per member, and the end blocks)."""
    return int(max_bytes) + (4 * MAX_MEMBERS + 2) * _BLOCK


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                  and _FILE.fullmatch(p.name))


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


def _refusal(member: tarfile.TarInfo, *, what: str) -> str | None:
    """Why ``member`` is not a file a bundle holds (None: it is one)."""
    name = member.name[:60]
    if member.type not in _PLAIN_TYPES or member.issparse():
        return (f"{what} holds {name!r}, which is not a plain file (a link, folder, device or "
                "sparse member); send the folder medveil wrote")
    odd = sorted(set(member.pax_headers) - _HARMLESS_PAX)
    if odd:
        return (f"{what} holds {name!r} with a PAX header declaring {', '.join(odd)[:80]}, "
                "which a bundle never needs; send the folder medveil wrote")
    if not _FILE.fullmatch(member.name):
        return (f"{what} holds {name!r}, which is not a file a medveil bundle holds; send the "
                "folder medveil wrote")
    if member.size < 0:
        return f"{what} holds {name!r} with a negative size; send the folder medveil wrote"
    return None


def _plan(tar: tarfile.TarFile, *, what: str, max_bytes: int) -> list[tarfile.TarInfo]:
    """Every member's header, judged before anything is written."""
    members: list[tarfile.TarInfo] = []
    names: set[str] = set()
    total = 0
    for member in tar:
        if len(members) >= MAX_MEMBERS:
            raise IntegrityError(f"{what} holds more than {MAX_MEMBERS} files, more than a "
                                 "bundle holds; send the folder medveil wrote")
        reason = _refusal(member, what=what)
        if reason is None and member.name in names:
            reason = f"{what} holds {member.name!r} twice; send the folder medveil wrote"
        if reason is not None:
            raise IntegrityError(reason)
        total += member.size
        if total > max_bytes:
            raise BundleTooLargeError(
                f"{what} declares over {max_bytes // 2**20} MiB of files ({member.name} alone "
                f"{member.size // 2**20} MiB), over the bound of {max_bytes // 2**20} MiB; "
                "nothing was written (raise the bound if this bundle is really this large)")
        names.add(member.name)
        members.append(member)
    if "manifest.json" not in names:
        raise IntegrityError(f"{what} has no manifest.json; send the folder medveil wrote")
    return members


def _copy_counted(source, target: Path, *, size: int, what: str) -> None:
    """Exactly ``size`` bytes from ``source`` into a new private file; more or fewer is
    a refusal (a header's size is a claim, the bytes are counted)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as handle:
        while data := source.read(min(1 << 20, size - written + 1)):
            written += len(data)
            if written > size:
                raise BundleTooLargeError(f"{what}: {target.name} holds more bytes than its "
                                          f"header declares ({size}); nothing was kept")
            handle.write(data)
        if written != size:
            raise IntegrityError(f"{what}: {target.name} ends after {written} of its {size} "
                                 "bytes; send it again")
        handle.flush()
        os.fsync(handle.fileno())


def extract_bundle(archive: str | Path, into: Path, *, what: str,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Extract a bundle tar into the (existing, private, empty) folder ``into``.

    Every header is judged first (see the module's docstring), the sum of the declared
    sizes bounded by ``max_bytes``; only then are the files written, each counted
    against its declared size. On any refusal the files written here are removed.
    """
    written: list[Path] = []
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = _plan(tar, what=what, max_bytes=max_bytes)
            for member in members:
                source = tar.extractfile(member)
                if source is None:
                    raise IntegrityError(f"{what}: {member.name} cannot be read")
                written.append(into / member.name)
                _copy_counted(source, written[-1], size=member.size, what=what)
    except tarfile.TarError as exc:
        _remove(written)
        raise IntegrityError(f"{what} is not a complete tar stream ({exc}); send it again") \
            from None
    except BaseException:
        _remove(written)
        raise
    return [member.name for member in members]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
