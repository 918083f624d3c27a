"""The attack suite: visual, known-plaintext, shadow-key, re-identification."""

from __future__ import annotations

from medveil.attacks.suite import (
    AttackBudget,
    AttackResult,
    known_plaintext,
    leak_count,
    reidentification,
    shadow_key,
    visual,
)

__all__ = ["AttackBudget", "AttackResult", "known_plaintext", "leak_count", "reidentification",
           "shadow_key", "visual"]
