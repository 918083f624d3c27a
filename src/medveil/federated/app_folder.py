"""The Flower App folder ``flwr run`` takes: a ``pyproject.toml`` naming medveil's
``server_app`` and ``client_app`` (:mod:`medveil.federated.apps`) and the run's
configuration. The code itself is the installed medveil on every node; the folder
carries no data, no key and no code of its own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from medveil.errors import ConfigError

FLOWER_VERSION = "1.42.0"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"a run setting is {value}; give a finite number")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise ConfigError(f"a run setting of type {type(value).__name__} cannot go in the app's "
                      "run config (numbers, text and true/false only)")


def write_flower_app(out: str | os.PathLike[str], *, run_config: dict[str, Any],
                     force: bool = False) -> Path:
    """Write the App folder for the federated protocol with ``run_config`` as its
    defaults (the ``federated`` scheme's parameters, ``seed``, ``centres``, ``out``);
    they are checked as a bench row's are before anything is written."""
    from medveil.atomic import atomic_write_bytes, check_output
    from medveil.federated.apps import scheme_params

    scheme_params(run_config)  # unknown or ill-typed settings: the scheme's own error
    out = Path(out)
    check_output(out, force=force)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = "\n".join(f"{k} = {_toml_value(v)}" for k, v in sorted(run_config.items()))
    pyproject = f'''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "medveil-federated"
version = "1.0.0"
description = "medveil's federated protocol (FedAvg, DP-SGD) as a Flower App"
license = {{file = "LICENSE"}}
dependencies = ["flwr>={FLOWER_VERSION}"]

[tool.flwr.app]
publisher = "medveil"
fab-format-version = 1
flwr-version-target = "{FLOWER_VERSION}"

[tool.flwr.app.components]
serverapp = "medveil.federated.apps:server_app"
clientapp = "medveil.federated.apps:client_app"

[tool.flwr.app.config]
{config}
'''
    atomic_write_bytes(out / "pyproject.toml", pyproject.encode(), force=force)
    atomic_write_bytes(out / "LICENSE", b"Apache-2.0 (the App folder only; medveil's own "
                       b"licence covers its code)\n", force=force)
    return out
