"""Finding schemes by name: importing this registers every built-in scheme module.

Apart from ``base`` (the interface and the ``register`` decorator the scheme modules
use) so that no scheme module imports the package that imports it.
"""

from __future__ import annotations

from typing import Any

from medveil.errors import ConfigError, unknown_name
from medveil.schemes import (  # noqa: F401  (registration)
    block_scramble,
    ckks,
    federated,
    fesf,
    intensity_lut,
    obfuscation,
    plain,
    primis,
    privacy_sf,
)
from medveil.schemes.base import SCHEMES, Scheme, check_params


def available_schemes(*, include_reference: bool = True) -> list[str]:
    """Registered names, ``plain`` first."""
    names = [n for n, c in SCHEMES.items() if include_reference or not c.reference_only]
    return sorted(names, key=lambda n: (n != "plain", n))


def get_scheme_class(name: str) -> type[Scheme]:
    if name not in SCHEMES:
        raise unknown_name("scheme", name, available_schemes())
    return SCHEMES[name]


def create(name: str, **params: Any) -> Scheme:
    """A new, unfitted instance of the scheme registered as ``name``."""
    cls = get_scheme_class(name)
    check_params(cls, params)
    try:
        return cls(**params)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"bad parameters for scheme '{name}': {exc}") from None
