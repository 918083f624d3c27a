"""Ways of running the processor's task: owner and processor halves exchanging messages.

Importing this registers the built-in protocols (``view``, ``key_holder``,
``encrypted_inference``, ``encoded_segmentation``).
"""

from __future__ import annotations

from medveil.protocols.base import (
    PROTOCOLS,
    AttackSurface,
    Decoded,
    OwnerHalf,
    ProcessorHalf,
    Protocol,
    TaskOutcome,
    register_protocol,
)
from medveil.protocols.messages import Message
from medveil.protocols.registry import available_protocols, get_protocol
from medveil.protocols.runner import run_rounds, run_task

__all__ = ["PROTOCOLS", "AttackSurface", "Decoded", "Message", "OwnerHalf", "ProcessorHalf",
           "Protocol", "TaskOutcome", "available_protocols", "get_protocol",
           "register_protocol", "run_rounds", "run_task"]
