"""The bounds of a job, one set for the command line and the service.

`medveil train` and `medveil remote train` take their option bounds from here,
and `POST /jobs` checks every spec with :func:`check_job_spec` before anything is
stored, so a job the command line refuses is refused by the service in the same
words, and a job the service stores is one its worker can run: each field of the
right type and within its bound, nothing the worker does not read, and no
request large enough to hold the only worker for days or fill the database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from medveil.errors import ConfigError

#: Classifier epochs (the full budget trains 15).
MAX_EPOCHS = 1000
#: Segmenter training steps (the full budget trains 1500).
MAX_STEPS = 1_000_000
#: Seeds, as every command's ``--seed`` takes them.
MIN_SEED, MAX_SEED = 0, 2**32 - 1
#: The largest ``POST /jobs`` body read; a spec is a few hundred bytes.
MAX_JOB_BODY_BYTES = 64 * 1024
#: The largest results set a centre accepts by default (``remote predict
#: --max-download-mb``; the files, in MiB).
DEFAULT_MAX_DOWNLOAD_MB = 4096
#: Releases one pooled model trains on.
MAX_POOLED_RELEASES = 64
#: A split's name, as a release's manifest names it (``medveil.store``), bounded
#: (patterns here are used with ``fullmatch``: ``$`` would let a newline through).
SPLIT_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: The ids the service gives (``medveil.service.db.new_id``): a kind and 16 hex digits.
ID_PATTERN = re.compile(r"(release|model|results|job)-[0-9a-f]{16}")
#: How long a job may run before the service marks it failed.
MAX_JOB_WALL_S = 24 * 3600

JOB_KINDS = ("train", "predict")
_FIELDS = {"train": ("kind", "releases", "budget", "seed", "epochs", "steps"),
           "predict": ("kind", "release", "model", "split")}


def budget_names() -> tuple[str, ...]:
    """The named budgets (``medveil.budgets``; imported here only when asked: it loads
    torch)."""
    from medveil.budgets import BUDGETS

    return tuple(BUDGETS)


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A checked job: what the worker reads, each field within its bound."""

    kind: str
    releases: tuple[str, ...] = ()
    release: str | None = None
    model: str | None = None
    split: str = "test"
    budget: str = "full"
    seed: int = 0
    epochs: int | None = None
    steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The normalised spec the service stores: exactly the kind's fields."""
        values = {**self.__dict__, "releases": list(self.releases)}
        return {name: values[name] for name in _FIELDS[self.kind]}


def _field(name: str) -> str:
    """A field as both ends name it: the JSON key and the command line's option."""
    option = {"releases": "release"}.get(name, name)
    return f"job field '{name}' (--{option})"


def _show(value: Any) -> str:
    """A value as the message quotes it: JSON (ASCII, escaped), at most 40 characters."""
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else \
        type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(spec: dict[str, Any], name: str, low: int, high: int, *,
             default: int | None) -> int | None:
    value = spec.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{_field(name)} must be an integer from {low} to {high}, got "
                          f"{_show(value)}")
    return value


def _identifier(value: Any, *, name: str, kind: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or \
            not value.startswith(f"{kind}-"):
        raise ConfigError(f"{_field(name)} must be a {kind} id ({kind}- and 16 hex digits, "
                          f"as the service gave it), got {_show(value)}")
    return value


def check_train_options(*, budget: Any, seed: Any, epochs: Any, steps: Any) -> None:
    """The bounds of a training run's options (``medveil train``; train jobs too)."""
    _train_fields({"budget": budget, "seed": seed, "epochs": epochs, "steps": steps})


def _train_fields(spec: dict[str, Any]) -> dict[str, Any]:
    budget = spec.get("budget", "full")
    known = budget_names()
    if budget not in known:
        import difflib

        near = difflib.get_close_matches(budget, known, n=1, cutoff=0.5) \
            if isinstance(budget, str) else []
        raise ConfigError(f"{_field('budget')} must be one of {', '.join(known)}, got "
                          f"{_show(budget)}" + (f". Did you mean '{near[0]}'?" if near else ""))
    return {"budget": budget,
            "seed": _integer(spec, "seed", MIN_SEED, MAX_SEED, default=0),
            "epochs": _integer(spec, "epochs", 1, MAX_EPOCHS, default=None),
            "steps": _integer(spec, "steps", 1, MAX_STEPS, default=None)}


def check_job_spec(spec: Any) -> JobSpec:
    """``spec`` (a job as JSON gives it) checked and normalised; a ConfigError names the
    first field that is wrong and its bound."""
    if not isinstance(spec, dict):
        raise ConfigError(f"a job is a JSON object {{\"kind\": \"train\" | \"predict\", ...}}, "
                          f"got {_show(spec)}")
    kind = spec.get("kind")
    if kind not in JOB_KINDS:
        raise ConfigError(f"job field 'kind' must be train or predict, got {_show(kind)}")
    unknown = sorted(_show(k) for k in spec if k not in _FIELDS[kind])
    if unknown:
        raise ConfigError(f"a {kind} job has no field {', '.join(unknown[:3])}; its fields "
                          f"are {', '.join(_FIELDS[kind])}")
    if kind == "predict":
        model = spec.get("model")
        split = spec.get("split", "test")
        if not isinstance(split, str) or not SPLIT_PATTERN.fullmatch(split):
            raise ConfigError(f"{_field('split')} must be a split name (a lower-case word of "
                              f"at most 64 characters, such as test), got {_show(split)}")
        return JobSpec(kind=kind, release=_identifier(spec.get("release"), name="release",
                                                      kind="release"),
                       model=None if model is None else _identifier(model, name="model",
                                                                    kind="model"),
                       split=split)
    releases = spec.get("releases")
    if not isinstance(releases, list) or not 1 <= len(releases) <= MAX_POOLED_RELEASES:
        raise ConfigError(f"{_field('releases')} must be a list of 1 to "
                          f"{MAX_POOLED_RELEASES} release ids, got {_show(releases)}"
                          + (f" of {len(releases)}" if isinstance(releases, list) else ""))
    names = tuple(_identifier(r, name="releases", kind="release") for r in releases)
    twice = sorted({r for r in names if names.count(r) > 1})
    if twice:
        raise ConfigError(f"{_field('releases')} names {twice[0]} more than once; name "
                          "each release once")
    return JobSpec(kind=kind, releases=names, **_train_fields(spec))
