"""Protection schemes behind one interface; importing this registers them all."""

from __future__ import annotations

from medveil.schemes.base import SCHEMES, Scheme, register
from medveil.schemes.registry import available_schemes, create, get_scheme_class

__all__ = ["SCHEMES", "Scheme", "available_schemes", "create", "get_scheme_class", "register"]
