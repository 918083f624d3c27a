"""Tars an adversary sends: GNU sparse members, PAX size and sparse headers, headers that
declare more bytes than follow, links and devices, built block by block.

Python's ``tarfile`` writes most of them; the rest are its headers patched by hand
(the fields' offsets are POSIX ustar's and GNU tar's), checksum recomputed.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

BLOCK = 512
MiB = 2**20


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def _seal(buf: bytearray) -> bytes:
    """The header's checksum recomputed (the field counts as eight spaces)."""
    buf[148:156] = b" " * 8
    buf[148:156] = f"{sum(buf):06o}".encode() + b"\0 "
    return bytes(buf)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def regular(name: str, data: bytes, *, pax: dict[str, str] | None = None,
            kind: bytes = tarfile.REGTYPE) -> bytes:
    """A regular member (with ``pax``: a PAX header first)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = len(data), 0o600, kind
    if pax:
        info.pax_headers = dict(pax)
        return info.tobuf(format=tarfile.PAX_FORMAT) + _pad(data)
    return info.tobuf(format=tarfile.GNU_FORMAT) + _pad(data)


def special(name: str, kind: bytes, *, linkname: str = "manifest.json") -> bytes:
    """A folder, link, FIFO or device member (no data)."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o600
    return info.tobuf(format=tarfile.GNU_FORMAT)


def gnu_sparse(name: str, *, stored: bytes, real_size: int) -> bytes:
    """An old-GNU sparse member: ``stored`` bytes at offset 0 of a ``real_size`` file
    (the rest a hole, zeros when extracted): a few hundred bytes on the wire."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(stored), 0o600
    buf = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    buf[156:157] = tarfile.GNUTYPE_SPARSE
    buf[386:398] = _octal(0, 12)            # first sparse entry: offset
    buf[398:410] = _octal(len(stored), 12)  # and bytes stored
    buf[482] = 0                            # no extension headers
    buf[483:495] = _octal(real_size, 12)    # the file's real size
    return _seal(buf) + _pad(stored)


def pax_sparse(name: str, *, stored: bytes, real_size: int) -> bytes:
    """A PAX (GNU 1.0) sparse member: the map in the data, the real size in the header."""
    sparse_map = _pad(f"1\n0\n{len(stored)}\n".encode())
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.size, info.mode = len(sparse_map) + len(stored), 0o600
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": name, "GNU.sparse.realsize": str(real_size)}
    return info.tobuf(format=tarfile.PAX_FORMAT) + _pad(sparse_map + stored)


def declared(name: str, *, data: bytes, size: int) -> bytes:
    """A regular member whose header declares ``size`` bytes; ``data`` follows."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    buf = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    if size < 8**11:
        buf[124:136] = _octal(size, 12)
    else:  # GNU base-256
        buf[124:136] = b"\x80" + size.to_bytes(11, "big", signed=False)
    return _seal(buf) + _pad(data)


def end() -> bytes:
    return b"\0" * (2 * BLOCK)


@dataclass
class Member:
    """One generated member: what it is, its name and its bytes."""

    kind: str
    name: str
    data: bytes = field(default=b"")

    #: kinds a bundle may hold (plain regular files, harmless PAX keys)
    LEGAL = ("reg", "areg", "cont", "pax_mtime")

    def encode(self) -> bytes:
        kinds = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
                 "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}
        if self.kind in kinds:
            return special(self.name, kinds[self.kind])
        if self.kind == "reg":
            return regular(self.name, self.data)
        if self.kind == "areg":
            return regular(self.name, self.data, kind=tarfile.AREGTYPE)
        if self.kind == "cont":
            return regular(self.name, self.data, kind=tarfile.CONTTYPE)
        if self.kind == "pax_mtime":
            return regular(self.name, self.data, pax={"mtime": "1700000000.5"})
        if self.kind == "pax_size":
            return regular(self.name, self.data, pax={"size": str(len(self.data))})
        if self.kind == "gnu_sparse":
            return gnu_sparse(self.name, stored=self.data, real_size=len(self.data) + 64 * MiB)
        if self.kind == "pax_sparse":
            return pax_sparse(self.name, stored=self.data, real_size=len(self.data) + 64 * MiB)
        if self.kind == "lie":
            return declared(self.name, data=self.data, size=2**33 + len(self.data))
        raise ValueError(self.kind)


def tar_of(members: list[Member]) -> bytes:
    return b"".join(m.encode() for m in members) + end()


def read_back(blob: bytes) -> list[tarfile.TarInfo]:
    """What Python's tarfile makes of ``blob`` (to show a hostile tar is what it says)."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        return [m for m in tar]
