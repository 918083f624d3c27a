"""The owner's state: the fitted scheme, kept apart from the release.

``medveil protect`` writes two things: the *release* (what leaves the owner) and
the *owner state* (the fitted scheme: networks, host images, the HE model). The
state never holds key bytes (``Scheme.state_dict`` is checked for that by the
contract tests); it lives in its own folder, created 0700 with files 0600, never
inside the release. Key holders get it from the owner beside the key; the
processor never needs it.

Layout: ``state.json`` (scheme name, version, params, key fingerprint, protocol and
the state tree, where every array is a reference ``{"__array__": "a12"}``) and
``arrays.npz`` (the arrays, no pickles).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_directory, write_private_file
from medveil.errors import ConfigError, DataNotFoundError, IntegrityError, KeyMismatchError
from medveil.keys import Key
from medveil.npy import read_npz

STATE_FORMAT = "medveil.owner-state/1"
STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"


def _flatten(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"__array__": name}
    if isinstance(value, dict):
        return {str(k): _flatten(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_flatten(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _restore(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.asarray(arrays[value["__array__"]])
        return {k: _restore(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, arrays) for v in value]
    return value


def save_owner_state(out: str | os.PathLike[str], scheme, *, protocol: str,
                     force: bool = False, inputs: tuple[Any, ...] = (),
                     release: dict[str, Any] | None = None) -> Path:
    """Write ``scheme``'s fitted state into the folder ``out`` (0700, files 0600)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _flatten(scheme.state_dict(), arrays)
    record = {"format": STATE_FORMAT, "protocol": protocol, "state": tree,
              "release": release}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_directory(out, force=force, inputs=inputs, option="--state") as tmp:
        write_private_file(tmp / ARRAYS_FILE, buffer.getvalue())
        write_private_file(tmp / STATE_FILE, (json.dumps(record, indent=1) + "\n").encode())
    return Path(out)


def is_owner_state(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / STATE_FILE).is_file()


def load_owner_state(path: str | os.PathLike[str], *, key: Key | None = None):
    """The fitted scheme saved at ``path``; with ``key``, checked to be that key's."""
    from medveil.schemes import create

    path = Path(path)
    if path.is_file():
        raise DataNotFoundError(f"{path} is a file, not an owner-state folder; pass the --state "
                                "folder `medveil protect` wrote")
    if not path.is_dir() or not is_owner_state(path):
        raise DataNotFoundError(f"{path} is not an owner-state folder (no {STATE_FILE}); pass "
                                "the --state folder `medveil protect` wrote")
    try:
        record = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if record.get("format") != STATE_FORMAT:
            raise ValueError(record.get("format"))
        arrays = read_npz(path / ARRAYS_FILE, where=f"owner state {path}")
        state = _restore(record["state"], arrays)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise IntegrityError(f"owner state {path} is corrupt or incomplete ({type(exc).__name__})"
                             "; use the folder `medveil protect` wrote") from None
    try:
        scheme = create(state["scheme"], **state.get("params", {}))
        scheme.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise IntegrityError(f"owner state {path} does not fit its scheme "
                             f"({type(exc).__name__}): it was altered; use the folder "
                             "`medveil protect` wrote") from None
    if key is not None and scheme.keyed and state.get("key_fingerprint") not in (
            None, key.fingerprint):
        raise KeyMismatchError(
            f"owner state {path} belongs to key {str(state['key_fingerprint'])[:12]}..., not "
            f"{key.fingerprint[:12]}...; pass the key it was made with")
    return scheme


def scheme_for(manifest: dict[str, Any], state: str | os.PathLike[str] | None, *,
               key: Key | None):
    """The scheme that made a release or results: loaded from ``state``, or rebuilt from the
    manifest's parameters where the scheme learns nothing (``needs_fit`` false)."""
    from medveil.schemes import create, get_scheme_class

    record = manifest.get("scheme") or {}
    name = record.get("name")
    if state is not None:
        scheme = load_owner_state(state, key=key)
        if name is not None and scheme.name != name:
            raise ConfigError(f"owner state {state} is for scheme '{scheme.name}', these files "
                              f"are '{name}'; pass the state made with them")
        return scheme
    if name is None:
        raise ConfigError("these files name no scheme; pass --state")
    if get_scheme_class(name).needs_fit:
        raise ConfigError(f"scheme '{name}' keeps owner state (its fitted networks); pass "
                          "--state with the folder `medveil protect --state` wrote")
    return create(name, **record.get("params", {}))


def read_sent_release(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the owner sent with this state (the release's content digest and split sizes),
    or None for a state written before medveil recorded it."""
    path = Path(path)
    if path.is_file():
        raise DataNotFoundError(f"{path} is a file, not an owner-state folder; pass the --state "
                                "folder `medveil protect` wrote")
    if not (path / STATE_FILE).is_file():
        raise DataNotFoundError(f"{path} is not an owner-state folder (no {STATE_FILE}); pass "
                                "the --state folder `medveil protect` wrote")
    try:
        record = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        raise IntegrityError(f"owner state {path} is corrupt (its {STATE_FILE} is not JSON); "
                             "use the folder `medveil protect` wrote") from None
    sent = record.get("release") if isinstance(record, dict) else None
    if not isinstance(sent, dict) or not isinstance(sent.get("content_id"), str) or \
            not isinstance(sent.get("splits"), dict):
        return None
    protocol = record.get("protocol")
    return {**sent, "protocol": protocol if isinstance(protocol, str) else None}
