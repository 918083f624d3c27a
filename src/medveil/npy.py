"""Arrays read from outside (a release's shards, results, an owner state's npz), their
``.npy`` header checked before a byte is allocated.

``np.load`` allocates the shape a header declares: a 128-byte shard claiming
40 x 1 x 100000 x 100000 float32 asks for 1.6 TB and dies with a MemoryError. Here the
header is parsed first; the array must be of a plain dtype, its declared size must
equal the bytes that follow the header (so it can never need more memory than the file
itself) and stay under :func:`max_array_bytes`, which the owner can lower or raise with
``MEDVEIL_MAX_ARRAY_MB``.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from medveil.errors import ConfigError, IntegrityError

#: The default bound on one array read from outside (MiB): above the largest shard a
#: bench writes (a 128 px ckks test split: about 2 GiB).
DEFAULT_MAX_ARRAY_MB = 8192


def max_array_bytes() -> int:
    """The largest array medveil reads from a file it did not just write (bytes)."""
    raw = os.environ.get("MEDVEIL_MAX_ARRAY_MB", str(DEFAULT_MAX_ARRAY_MB))
    try:
        value = int(raw)
        if value < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"MEDVEIL_MAX_ARRAY_MB={raw!r}: give a whole number of MiB >= 1") \
            from None
    return value * 1024 * 1024


def _header(stream: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"npy version {version}")


def read_npy(data: bytes, *, where: str, shape: list[int] | None = None,
             dtype: str | None = None) -> np.ndarray:
    """The array in ``data`` (an ``.npy`` file's bytes), refused with an
    :class:`IntegrityError` naming ``where`` unless its header is sound, matches the
    declared ``shape`` / ``dtype`` where given, and fits the bytes and the bound."""
    stream = io.BytesIO(data)
    try:
        found_shape, _, found_dtype = _header(stream)
    except (ValueError, TypeError, SyntaxError, EOFError, OverflowError) as exc:
        raise IntegrityError(f"{where} is not a readable .npy array ({type(exc).__name__}); "
                             "re-create it with medveil") from None
    if found_dtype.hasobject or found_dtype.kind == "V":
        raise IntegrityError(f"{where} holds {found_dtype} values; medveil arrays hold plain "
                             "numbers only")
    if not all(isinstance(n, int) and n >= 0 for n in found_shape):
        raise IntegrityError(f"{where} declares the shape {found_shape}; re-create it")
    if shape is not None and list(found_shape) != list(shape) or \
            dtype is not None and str(found_dtype) != dtype:
        raise IntegrityError(f"{where} holds a {found_dtype} {list(found_shape)} array, its "
                             f"manifest says {dtype} {shape}: it was altered; re-create it")
    nbytes = math.prod(found_shape) * found_dtype.itemsize
    if nbytes > max_array_bytes():
        raise IntegrityError(f"{where} declares {nbytes / 2**20:.0f} MiB, over the "
                             f"{max_array_bytes() // 2**20} MiB bound (MEDVEIL_MAX_ARRAY_MB); "
                             "raise the bound if you trust it")
    if stream.tell() + nbytes != len(data):
        raise IntegrityError(f"{where} declares {nbytes} bytes of data but holds "
                             f"{len(data) - stream.tell()}: it is truncated or forged; "
                             "re-create it")
    return np.load(io.BytesIO(data), allow_pickle=False)


def read_npz(path: Path, *, where: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, each member bounded and checked as in
    :func:`read_npy` (a flipped byte fails the archive's CRC; a truncated file is not
    a zip)."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.file_size > max_array_bytes():
                    raise IntegrityError(f"{where}: member {info.filename[:40]!r} is not a "
                                         "bounded .npy array; re-create it")
                data = archive.read(info)
                arrays[info.filename[:-4]] = read_npy(data, where=f"{where}:{info.filename}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise IntegrityError(f"{where} is corrupt ({type(exc).__name__}); re-create it") \
            from None
    return arrays
