"""One entry point for "data": a bundled set, a path, or a protected store."""

from __future__ import annotations

import os
from typing import Any

from medveil.data import ImageSet, load_dataset
from medveil.keys import Key
from medveil.store import is_store, open_store


def load_source(source: str | os.PathLike[str], *, key: Key | None = None,
                **read_options: Any) -> ImageSet:
    """Read plaintext data, or the views of a protected store (checked against ``key``)."""
    if is_store(source):
        from medveil.protocols.view import views_as_imageset

        return views_as_imageset(open_store(source, key=key))
    return load_dataset(source, **read_options)
