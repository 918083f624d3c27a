"""Protocols by name: ``get_protocol`` imports the built-in protocol modules first (each
registers itself with ``base.register_protocol``). A protocol module imports ``base``,
never this module nor a scheme, so that schemes can check their protocol when they
register."""

from __future__ import annotations

from medveil.errors import unknown_name
from medveil.protocols.base import PROTOCOLS, Protocol


def _builtin() -> None:
    from medveil.protocols import (  # noqa: F401  (registration)
        encoded_segmentation,
        encrypted_inference,
        federated,
        key_holder,
        view,
    )


def get_protocol(name: str) -> Protocol:
    _builtin()
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, list(PROTOCOLS))
    return PROTOCOLS[name]


def available_protocols() -> list[str]:
    _builtin()
    return list(PROTOCOLS)
