"""The messages the two halves of a protocol exchange, and their one codec.

A :class:`Message` is what crosses from one party to the other: the owner's release,
the processor's results, encrypted logits, encoded masks, a model update. It holds
arrays (per split and extras) and a JSON header, nothing else: a :class:`~medveil.keys.Key`,
a fitted scheme or any other object is refused when the message is built, so a
processor-bound message cannot carry a key or owner state by construction.

One codec: a message *is* a bundle (``medveil.store``: manifest + ``.npy`` shards,
SHA-256 per shard, the owner's HMAC on owner messages). On disk it is that folder
(:func:`write_message`, :func:`read_message`), over HTTP the same folder as a tar
stream (``medveil.service.transfer``), in memory the same manifest and arrays
(:func:`to_bundle`); :func:`from_bundle` reads a message back from any of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medveil.errors import IntegrityError

if TYPE_CHECKING:
    from medveil.keys import Key
    from medveil.store import ProtectedStore

Arrays = dict[str, dict[str, np.ndarray]]

OWNER = "owner"
PROCESSOR = "processor"
#: Message kinds a store format carries when its manifest names none (bundles written
#: before messages had kinds): a release is the owner's round-0 message, results the
#: processor's answer.
_DEFAULT_KIND = {"medveil.store/1": ("release", OWNER), "medveil.results/1": ("results",
                                                                            PROCESSOR)}


def _check_json(value: Any, where: str) -> None:
    """JSON values only: str, numbers, bools, None, lists and string-keyed dicts."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not np.isfinite(value):
            raise TypeError(f"{where} is {value}: a message header holds finite numbers")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} that is not a string")
            _check_json(item, f"{where}.{k}")
        return
    raise TypeError(f"{where} is a {type(value).__name__}: a message carries arrays and "
                    "JSON values only (never a key, a scheme or owner state)")


def _check_array(value: Any, where: str) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where} is a {type(value).__name__}, not a numpy array: a message "
                        "carries arrays and JSON values only (never a key or owner state)")
    if value.dtype.kind in "OV":
        raise TypeError(f"{where} has dtype {value.dtype}: object arrays can hide anything")


@dataclass(frozen=True)
class Message:
    """One message of a protocol run: who sent it, in which round, and what it holds."""

    kind: str  #: "release", "results", "update", ...: what it is in its protocol
    sender: str  #: OWNER or PROCESSOR
    round: int
    arrays: Arrays = field(default_factory=dict)  #: per split: kind -> array
    extras: dict[str, np.ndarray] = field(default_factory=dict)  #: arrays of no split
    header: dict[str, Any] = field(default_factory=dict)  #: JSON: what the arrays are

    def __post_init__(self) -> None:
        if self.sender not in (OWNER, PROCESSOR):
            raise ValueError(f"a message's sender is '{OWNER}' or '{PROCESSOR}', not "
                             f"{self.sender!r}")
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError("a message names its kind")
        if not isinstance(self.round, int) or self.round < 0:
            raise ValueError(f"a message's round is a whole number >= 0, not {self.round!r}")
        for split, kinds in self.arrays.items():
            if not isinstance(kinds, dict):
                raise TypeError(f"arrays[{split!r}] is not a dict of arrays")
            for name, value in kinds.items():
                _check_array(value, f"arrays[{split!r}][{name!r}]")
        for name, value in self.extras.items():
            _check_array(value, f"extras[{name!r}]")
        _check_json(self.header, "header")
        if "message" in self.header:
            raise ValueError("'message' is the codec's own header field")

    @property
    def nbytes(self) -> int:
        """The bytes of its arrays (what the wire carries, less the manifest)."""
        return sum(v.nbytes for kinds in self.arrays.values() for v in kinds.values()) + \
            sum(v.nbytes for v in self.extras.values())

    def split_count(self, split: str) -> int:
        """Rows of ``split``: the length of its first array."""
        return len(next(iter(self.arrays[split].values())))


def _header(message: Message) -> dict[str, Any]:
    return {**message.header, "message": {"kind": message.kind, "sender": message.sender,
                                          "round": message.round}}


def _format(message: Message) -> str:
    from medveil.store import RESULTS_FORMAT, STORE_FORMAT

    return STORE_FORMAT if message.sender == OWNER else RESULTS_FORMAT


def to_bundle(message: Message, *, key: Key | None = None) -> ProtectedStore:
    """The message as the bundle :func:`write_message` writes, kept in memory (``key``:
    the owner's, to seal an owner message with the manifest's HMAC)."""
    from medveil.store import ProtectedStore

    return ProtectedStore.in_memory(arrays=message.arrays, extras=message.extras,
                                    header=_header(message), key=key, fmt=_format(message))


def write_message(out: str | os.PathLike[str], message: Message, *, key: Key | None = None,
                  force: bool = False, inputs: tuple[Any, ...] = ()) -> dict[str, Any]:
    """The message as a bundle folder (atomic; see ``medveil.store.write_bundle``)."""
    from medveil.store import write_bundle

    return write_bundle(out, arrays=message.arrays, extras=message.extras,
                        header=_header(message), key=key, fmt=_format(message), force=force,
                        inputs=inputs)


def from_bundle(bundle: ProtectedStore) -> Message:
    """A message back from a verified bundle (read from disk, unpacked from HTTP, or in
    memory); its header is checked as an adversary's would be."""
    manifest = bundle.manifest
    meta = manifest.get("message")
    if meta is None:
        kind, sender = _DEFAULT_KIND.get(manifest.get("format"), (None, None))
        meta = {"kind": kind, "sender": sender, "round": 0}
    if not isinstance(meta, dict):
        raise IntegrityError(f"{bundle.label}: its manifest's 'message' field is not a record")
    skip = {"format", "created", "medveil_version", "splits", "shards", "manifest_hmac",
            "message", "key_fingerprint"}
    header = {k: v for k, v in manifest.items() if k not in skip}
    try:
        return Message(kind=meta.get("kind"), sender=meta.get("sender"),
                       round=meta.get("round"), arrays=bundle.arrays, extras=bundle.extras,
                       header=json.loads(json.dumps(header)))
    except (TypeError, ValueError) as exc:
        raise IntegrityError(f"{bundle.label} is not a message medveil wrote ({exc})") from None


def read_message(path: str | os.PathLike[str], *, key: Key | None = None,
                 fmt: str | None = None) -> Message:
    """A message from its bundle folder, every shard verified (with ``key``, the HMAC)."""
    from medveil.store import STORE_FORMAT, open_store

    return from_bundle(open_store(path, key=key, fmt=fmt or STORE_FORMAT))
