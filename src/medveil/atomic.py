"""Write files and folders so that a crash never leaves a half-written output."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medveil.errors import ConfigError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` beside ``path`` and rename it into place."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist; create it first")
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, force: bool = False,
                     private: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``path`` only if the block succeeds.

    ``private`` creates the folder 0700 (owner state: only its owner may read it).
    """
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; choose another --out or pass --force")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist; create it first")
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir(mode=0o700 if private else 0o777)
    if private:
        os.chmod(tmp, 0o700)  # mkdir's mode is masked by the umask; make it exact
    try:
        yield tmp
        if path.exists():
            trash = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 (owner-only) and write ``data``; never widens an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
