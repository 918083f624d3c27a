"""Write outputs so that a crash never leaves a half-written one, and never clobber.

Every output medveil writes (releases, owner state, results, predictions,
recovered images, models, keys) may hold patient-derived data, so each is created
owner-only: folders 0700, files 0600, whatever the umask. Each is first written
into a temporary sibling ``.NAME.tmp-PID-RANDOM`` (0700 / 0600) and then moved
into place in one step; when an old output is replaced, the two are swapped
atomically (``renameat2(RENAME_EXCHANGE)`` on Linux), so at every instant ``NAME``
is either the old output or the new one. A sibling left by a killed run
(its PID is gone) is removed by the next run on the same ``NAME``.

``--force`` replaces only what medveil itself wrote (:func:`written_by_medveil`)
and never one of the command's inputs.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medveil.errors import ConfigError, KeyFileError

#: The file medveil puts in every output folder that has no manifest of its own
#: (decoded masks, recovered PNGs, the multi-centre table), so that ``--force`` can
#: tell its own outputs from a user's folder.
OUTPUT_MARKER = ".medveil-output"
#: Only names medveil makes (``.NAME.tmp-PID-RANDOM``): the cleanup of a killed run's
#: siblings never removes anything else.
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_MAX_NAME = 200  # room for the sibling's prefix and suffix within NAME_MAX (255)
#: A key file's format (``medveil.keys.KEY_FORMAT``; named here too: keys imports this
#: module to write a key, so this module cannot import keys).
KEY_FILE_FORMAT = "medveil.key/1"
#: How many entries of a folder output are searched for a key file before it is replaced.
_KEY_SEARCH_LIMIT = 100_000


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_siblings(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary siblings of ``path`` left by runs that were killed."""
    path = Path(path)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _SIBLING.match(entry.name)
        if not match or match["name"] != path.name:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue  # this run's, or another run's that is writing it now
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _json_format(path: Path) -> str | None:
    try:
        if path.stat().st_size > 50_000_000:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    value = record.get("format") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def written_by_medveil(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an output medveil wrote (so ``--force`` may replace it).

    Folders: a release or results set (``manifest.json``), an owner state
    (``state.json``) or a folder with medveil's marker. Files: a medveil JSON record
    (key, metrics), a predictions CSV, a recovered npz, a model or HE model file.
    """
    path = Path(path)
    if path.is_symlink():
        return False
    if path.is_dir():
        for name in ("manifest.json", "state.json", OUTPUT_MARKER):
            if (path / name).is_file() and (_json_format(path / name) or "").startswith(
                    "medveil."):
                return True
        return False
    if not path.is_file():
        return False
    if (_json_format(path) or "").startswith("medveil."):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except OSError:
        return False
    if head.startswith(b"index,prob_0"):
        return True
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
        # np.savez with medveil's marker member, or torch.save of a medveil model record
        return "medveil_format.npy" in names or any(
            n.endswith("/data.pkl") for n in names) and _torch_medveil(path)
    return False


def _torch_medveil(path: Path) -> bool:
    try:
        from medveil.model_file import read_model_record

        read_model_record(path)
        return True
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def same_or_inside(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one path or one lies inside the other."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents or a in b.parents


def key_file_in(path: Path) -> Path | None:
    """``path`` itself if it is a medveil key file, else the first key file inside the
    folder ``path`` (searched without following links), else None."""
    if path.is_symlink():
        return None
    if path.is_file():
        return path if _small_json_format(path) == KEY_FILE_FORMAT else None
    if not path.is_dir():
        return None
    seen = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            seen += 1
            candidate = Path(folder) / name
            if seen > _KEY_SEARCH_LIMIT:
                return None
            if not candidate.is_symlink() and \
                    _small_json_format(candidate) == KEY_FILE_FORMAT:
                return candidate
    return None


def _small_json_format(path: Path) -> str | None:
    try:
        if path.stat().st_size > 4096:  # a key file is a few hundred bytes
            return None
    except OSError:
        return None
    return _json_format(path)


def check_output(path: str | os.PathLike[str], *, force: bool = False,
                 inputs: Iterable[str | os.PathLike[str] | None] = (),
                 option: str = "--out", replace_key: bool = False) -> Path:
    """Refuse an output that would clobber: an existing path without ``force``, a path
    medveil did not write, a symbolic link, one of the inputs, a missing parent, and,
    ``force`` or not, a key file or a folder holding one (``replace_key``: only
    ``Key.save``, for ``keygen --force``)."""
    path = Path(path)
    if len(path.name.encode()) > _MAX_NAME:
        raise ConfigError(f"{option} name {path.name[:40]}... is too long; choose a shorter one")
    try:
        for source in inputs:
            if source is not None and Path(source).exists() and same_or_inside(path,
                                                                                Path(source)):
                raise ConfigError(f"{option} {path} is (or holds, or lies inside) the input "
                                  f"{source}; write the output somewhere else")
    except RuntimeError:  # a symlink loop
        raise ConfigError(f"{option} {path} is a symbolic link loop; choose another path") \
            from None
    if path.is_symlink():
        raise ConfigError(f"{option} {path} is a symbolic link; medveil does not write through "
                          "links: give the real path")
    if not path.parent.is_dir():
        raise ConfigError(f"{option}: folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: folder {path.parent} is not writable; choose another "
                          "place or fix its permissions")
    if path.exists():
        key_file = key_file_in(path) if not replace_key else None
        if key_file is not None:
            where = "is" if key_file == path else f"holds one ({key_file.name}):"
            raise KeyFileError(
                f"{option} {path} {where} a medveil key file, the only copy of a secret; "
                "medveil replaces a key only by `medveil keygen --force`: choose another "
                f"{option}")
        if not force:
            raise ConfigError(f"{path} already exists; choose another {option} or pass --force")
        if not written_by_medveil(path):
            raise ConfigError(f"{path} exists and is not an output medveil wrote; --force "
                              "replaces only medveil's own outputs: choose another "
                              f"{option} or move it away yourself")
    return path


def _libc_exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux renameat2); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _move_into_place(tmp: Path, path: Path) -> None:
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    if _libc_exchange(tmp, path):
        old = tmp  # after the swap the temporary name holds the old output
    else:  # two renames: the old output stays under a sibling name for an instant
        old = _sibling(path, "old")
        os.rename(path, old)
        os.rename(tmp, path)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def make_private(root: Path) -> None:
    """Owner-only modes under ``root`` (folders 0700, files 0600)."""
    if root.is_file():
        os.chmod(root, 0o600)
        return
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder) / name, 0o700)
        for name in files:
            os.chmod(Path(folder) / name, 0o600)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, force: bool = False,
                       inputs: Iterable[str | os.PathLike[str] | None] = (),
                       option: str = "--out", check: bool = True,
                       replace_key: bool = False) -> Path:
    """Write ``data`` to ``path`` (0600) through a temporary sibling and one rename.

    An existing ``path`` is replaced only with ``force`` and only if medveil wrote it;
    ``check=False`` is for files inside an output folder medveil owns (the bench's
    report and scorecard), which it rewrites as it goes.
    """
    path = Path(path)
    if check:
        check_output(path, force=force, inputs=inputs, option=option, replace_key=replace_key)
    elif not replace_key and key_file_in(path) is not None:
        raise KeyFileError(f"{path} is a medveil key file; medveil replaces a key only by "
                           "`medveil keygen --force`")
    remove_stale_siblings(path)
    tmp = _sibling(path, "tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        if path.is_dir() and not path.is_symlink():
            _move_into_place(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, force: bool = False,
                     inputs: Iterable[str | os.PathLike[str] | None] = (),
                     marker: str | None = None, option: str = "--out") -> Iterator[Path]:
    """Yield a temporary sibling folder (0700) that replaces ``path`` only if the block
    succeeds; everything in it is made owner-only before the swap.

    ``marker`` names the kind of output for folders without a manifest of their own
    (written as :data:`OUTPUT_MARKER`, so that ``--force`` recognises them later).
    """
    path = Path(path)
    check_output(path, force=force, inputs=inputs, option=option)
    remove_stale_siblings(path)
    tmp = _sibling(path, "tmp")
    tmp.mkdir(mode=0o700)
    os.chmod(tmp, 0o700)  # mkdir's mode is masked by the umask; make it exact
    try:
        yield tmp
        if marker is not None:
            write_private_file(tmp / OUTPUT_MARKER, (json.dumps(
                {"format": "medveil.output/1", "kind": marker}) + "\n").encode())
        make_private(tmp)
        _move_into_place(tmp, path)
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
