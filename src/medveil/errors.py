"""One family of exceptions for every failure a user can cause.

The CLI catches :class:`MedveilError` and prints its message as one line, so
every message must name the thing that is wrong and say how to fix it.
"""

from __future__ import annotations


class MedveilError(Exception):
    """Base class of every user-caused failure in medveil."""


class DataError(MedveilError):
    """Input data cannot be read or is not usable as given."""


class DataNotFoundError(DataError):
    """A path or bundled data set name does not exist."""


class UnknownNameError(MedveilError, KeyError):
    """A registry lookup (scheme, reader, data set) named nothing known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class KeyFileError(MedveilError):
    """A key file is missing, malformed, too permissive or would be overwritten."""


class KeyMismatchError(MedveilError):
    """The key given is not the key the view, store or scheme was made with."""


class IntegrityError(MedveilError):
    """A protected store has been tampered with, truncated or is incomplete."""


class NotFittedError(MedveilError):
    """A scheme that needs fitting was used before ``fit``."""


class NotInvertibleError(MedveilError):
    """``recover`` was called on a scheme that cannot give images back."""


class ConfigError(MedveilError):
    """An option or parameter value is invalid."""


class ModelFileError(MedveilError):
    """A trained-model file is missing, malformed or does not fit the data."""


class MissingDependencyError(MedveilError):
    """An optional dependency is not installed; the message gives the install hint."""


def unknown_name(kind: str, name: str, known: list[str]) -> UnknownNameError:
    """The registries' error: the unknown ``name``, the closest known one, all known."""
    import difflib

    near = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return UnknownNameError(f"unknown {kind} '{name}'.{hint} Known {kind}s: {', '.join(known)}")
