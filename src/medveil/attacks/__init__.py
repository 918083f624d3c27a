"""The attack suite: visual, known-plaintext, shadow-key, re-identification, third parties."""

from __future__ import annotations

from medveil.attacks.suite import (
    AttackBudget,
    AttackResult,
    known_plaintext,
    leak_sizes,
    reidentification,
    shadow_key,
    third_parties,
    visual,
)

__all__ = ["AttackBudget", "AttackResult", "known_plaintext", "leak_sizes", "reidentification",
           "shadow_key", "third_parties", "visual"]
