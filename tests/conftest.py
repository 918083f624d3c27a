"""Shared fixtures: small real crops of the bundled data, keys, and the shared data path."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from medveil.data import load_dataset
from medveil.keys import Key

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/data only exists on developer machines and CI)")
    return path


@pytest.fixture(scope="session")
def cxr():
    """The bundled real chest X-rays (480 train / 160 test, 64x64)."""
    return load_dataset("cxr-demo")


@pytest.fixture(scope="session")
def cxr_crops(cxr) -> np.ndarray:
    """Eight real chest X-ray crops, 32x32, for fast unit tests."""
    return np.ascontiguousarray(cxr.split("test").images[:8, :, 16:48, 16:48])


@pytest.fixture(scope="session")
def chase():
    """The bundled CHASE_DB1 subset at 256x256."""
    return load_dataset("chase-demo")


@pytest.fixture()
def key() -> Key:
    return Key.generate()


@pytest.fixture()
def other_key() -> Key:
    return Key.generate()


def key_secret(key: Key) -> bytes:
    """The raw bytes, for tests that prove they never leak."""
    return key._Key__secret  # noqa: SLF001


def invoke(*args: str) -> tuple[int, str]:
    """The command line's entry point (``medveil.cli.main``, the one the console script
    runs) in this process: (exit code, stderr + stdout)."""
    from medveil.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue() + out.getvalue()
    return 0, err.getvalue() + out.getvalue()
