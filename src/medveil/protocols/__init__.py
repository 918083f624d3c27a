"""Ways of running the processor's task; importing this registers them all."""

from __future__ import annotations

from medveil.protocols import (  # noqa: F401  (registration)
    encoded_segmentation,
    encrypted_inference,
    key_holder,
    view,
)
from medveil.protocols.base import (
    PROTOCOLS,
    BenchRun,
    Decoded,
    Protocol,
    get_protocol,
    register_protocol,
)

__all__ = ["PROTOCOLS", "BenchRun", "Decoded", "Protocol", "get_protocol", "register_protocol"]
