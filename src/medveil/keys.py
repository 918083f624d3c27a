"""Secret keys, their fingerprints, and keyed cryptographic randomness.

A key is 32 random bytes. Every keyed random choice in medveil is drawn from a
:class:`KeyedStream`: HKDF-SHA256 derives purpose-specific bytes from the key,
and a ChaCha20 keystream turns them into uniforms, normals and permutations.
Nothing ever seeds numpy with key material, and the key bytes never appear in
a repr, a log line, a manifest or a pickle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path

import numpy as np

from medveil.errors import KeyFileError

KEY_FORMAT = "medveil.key/1"  # atomic.KEY_FILE_FORMAT names it too
KEY_BYTES = 32
_FINGERPRINT_DOMAIN = b"medveil/fingerprint/v1"
_HKDF_SALT = b"medveil/hkdf-salt/v1"


class Key:
    """A 32-byte secret key. Safe to print: only its fingerprint is shown."""

    __slots__ = ("__secret", "_fingerprint")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) != KEY_BYTES:
            raise KeyFileError(
                f"a key must be exactly {KEY_BYTES} bytes; make one with `medveil keygen KEYFILE`"
            )
        self.__secret = bytes(secret)
        digest = hashlib.sha256(_FINGERPRINT_DOMAIN + self.__secret).hexdigest()
        self._fingerprint = digest[:32]

    # -- construction -------------------------------------------------------------
    @classmethod
    def generate(cls) -> Key:
        """Draw a fresh key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Key:
        """Read a key file written by :meth:`save`, checking format and fingerprint."""
        path = Path(path)
        if path.is_dir():
            raise KeyFileError(f"key file {path} is a folder, not a key file; pass the file "
                               "`medveil keygen` wrote")
        if not path.is_file():
            raise KeyFileError(
                f"key file {path} does not exist; create one with `medveil keygen {path}`"
            )
        mode = path.stat().st_mode
        if mode & 0o077:
            raise KeyFileError(
                f"key file {path} can be read by other users (mode {mode & 0o777:o}); "
                f"make it private with `chmod 600 {path}` (and consider the key exposed "
                "if others could read it)")
        try:
            if path.stat().st_size > 4096:
                raise ValueError("size")
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("format") != KEY_FORMAT:
                raise ValueError("format")
            secret = base64.b64decode(record["key"], validate=True)
        except Exception:  # noqa: BLE001 - any parse failure means the same to the user
            raise KeyFileError(
                f"{path} is not a medveil key file ({KEY_FORMAT}); "
                "create one with `medveil keygen`"
            ) from None
        key = cls(secret)
        if record.get("fingerprint") != key.fingerprint:
            raise KeyFileError(
                f"key file {path} is corrupt: its bytes do not match its recorded fingerprint; "
                "restore it from a backup"
            )
        return key

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the key with mode 0600; refuse to overwrite unless ``force``."""
        from medveil.atomic import atomic_write_bytes, written_by_medveil

        path = Path(path)
        if path.exists() and not force:
            raise KeyFileError(
                f"{path} already exists; pass --force to overwrite it "
                "(data protected with the old key can then no longer be recovered)"
            )
        if path.exists() and not (path.is_file() and written_by_medveil(path)):
            raise KeyFileError(f"{path} exists and is not a medveil key file; --force replaces "
                               "only a key file: choose another path")
        if not path.parent.is_dir():
            raise KeyFileError(f"folder {path.parent} does not exist; create it first")
        record = {
            "format": KEY_FORMAT,
            "fingerprint": self.fingerprint,
            "key": base64.b64encode(self.__secret).decode("ascii"),
        }
        atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode(), force=True,
                           option="key file", replace_key=True)
        return path

    # -- public facts -------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """A hash of the key: safe to print and store, identifies the key."""
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Key(fingerprint={self._fingerprint!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and secrets.compare_digest(
            self._fingerprint, other._fingerprint
        )

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __reduce__(self):  # pickling would write the key bytes into checkpoints
        raise TypeError("medveil Key objects cannot be pickled; store key.fingerprint instead")

    # -- derivation ---------------------------------------------------------------
    def derive(self, purpose: str, length: int = 32) -> bytes:
        """Derive independent bytes for one purpose (HKDF-SHA256).

        Different purposes give unrelated outputs, so one key can drive many
        keyed components without any of them revealing the others.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if not purpose:
            raise ValueError("purpose must be a non-empty string")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT,
                    info=purpose.encode("utf-8"))
        return hkdf.derive(self.__secret)

    def stream(self, purpose: str) -> KeyedStream:
        """A cryptographic random stream for one purpose."""
        return KeyedStream(self.derive(purpose, 32))


class KeyedStream:
    """Random numbers from a ChaCha20 keystream keyed by derived bytes.

    Sequential draws consume the keystream in order, so the same purpose and
    the same sequence of calls always give the same numbers.
    """

    __slots__ = ("_encryptor",)

    def __init__(self, seed_bytes: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        if len(seed_bytes) != 32:
            raise ValueError("KeyedStream needs 32 derived bytes")
        cipher = Cipher(algorithms.ChaCha20(seed_bytes, b"\x00" * 16), mode=None)
        self._encryptor = cipher.encryptor()

    def __repr__(self) -> str:
        return "KeyedStream(<secret>)"

    def __reduce__(self):
        raise TypeError("KeyedStream objects cannot be pickled")

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of keystream."""
        return self._encryptor.update(b"\x00" * n)

    def _uint64(self, n: int) -> np.ndarray:
        return np.frombuffer(self.bytes(8 * n), dtype="<u8").copy()

    def uniform(self, size: int | tuple[int, ...] = (), low: float = 0.0,
                high: float = 1.0) -> np.ndarray:
        """Uniform floats in [low, high), 53-bit resolution."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = int(np.prod(shape)) if shape else 1
        u = (self._uint64(n) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return (low + (high - low) * u).reshape(shape)

    def normal(self, size: int | tuple[int, ...] = (), mean: float = 0.0,
               std: float = 1.0) -> np.ndarray:
        """Gaussian floats by the Box-Muller transform."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = int(np.prod(shape)) if shape else 1
        m = (n + 1) // 2
        u1 = 1.0 - self.uniform(m)  # (0, 1]: log is finite
        u2 = self.uniform(m)
        radius = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
        return (mean + std * z[:n]).reshape(shape)

    def integers(self, high: int, size: int | tuple[int, ...] = ()) -> np.ndarray:
        """Uniform integers in [0, high), unbiased by rejection sampling."""
        if high <= 0:
            raise ValueError("high must be positive")
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = int(np.prod(shape)) if shape else 1
        limit = (2**64 // high) * high  # values at or above are rejected
        out = np.empty(0, dtype=np.uint64)
        while out.size < n:
            draw = self._uint64(max(n - out.size, 1) + 8)
            out = np.concatenate([out, draw[draw < np.uint64(limit)]]) if limit < 2**64 else \
                np.concatenate([out, draw])
        return (out[:n] % np.uint64(high)).astype(np.int64).reshape(shape)

    def permutation(self, n: int) -> np.ndarray:
        """A uniformly random permutation of range(n) (Fisher-Yates)."""
        perm = np.arange(n, dtype=np.int64)
        if n < 2:
            return perm
        # j_i uniform in [0, i] for i = n-1 .. 1, drawn in one batch per bound class.
        draws = self._uint64(n - 1)
        for idx, i in enumerate(range(n - 1, 0, -1)):
            bound = i + 1
            value = int(draws[idx])
            limit = (2**64 // bound) * bound
            while value >= limit:  # rejection keeps it unbiased; almost never taken
                value = int(self._uint64(1)[0])
            j = value % bound
            perm[i], perm[j] = perm[j], perm[i]
        return perm

    def choice(self, n: int, size: int, *, replace: bool = True) -> np.ndarray:
        """Indices drawn from range(n), with or without replacement."""
        if not replace:
            if size > n:
                raise ValueError("cannot draw more than n without replacement")
            return self.permutation(n)[:size]
        return self.integers(n, size)
