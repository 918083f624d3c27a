"""Protection schemes behind one interface; importing this registers them all."""

from __future__ import annotations

from medveil.schemes import (  # noqa: F401  (registration)
    block_scramble,
    ckks,
    fesf,
    intensity_lut,
    obfuscation,
    plain,
    primis,
    privacy_sf,
)
from medveil.schemes.base import (
    SCHEMES,
    Scheme,
    available_schemes,
    create,
    get_scheme_class,
    register,
)

__all__ = ["SCHEMES", "Scheme", "available_schemes", "create", "get_scheme_class", "register"]
