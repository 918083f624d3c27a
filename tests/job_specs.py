"""Generated job specs, good and bad, for the checks both ends share (medveil.limits):
the unit tests call ``check_job_spec``, the service tests POST them to a real server.

A bad spec is a good one with one field broken: a wrong type, a number out of its
bound, a huge string, a release named twice, too many releases, a key no job has.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from medveil import limits

HEX = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)


def ids(kind: str) -> st.SearchStrategy[str]:
    return HEX.map(lambda h: f"{kind}-{h}")


def good_specs(release: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[dict]:
    """Specs every bound allows (optional fields sometimes left out)."""
    release = ids("release") if release is None else release
    train = st.fixed_dictionaries(
        {"kind": st.just("train"),
         "releases": st.lists(release, min_size=1, max_size=limits.MAX_POOLED_RELEASES,
                              unique=True)},
        optional={"budget": st.sampled_from(limits.budget_names()),
                  "seed": st.integers(limits.MIN_SEED, limits.MAX_SEED),
                  "epochs": st.none() | st.integers(1, limits.MAX_EPOCHS),
                  "steps": st.none() | st.integers(1, limits.MAX_STEPS)})
    predict = st.fixed_dictionaries(
        {"kind": st.just("predict"), "release": release},
        optional={"model": st.none() | ids("model"),
                  "split": st.from_regex(limits.SPLIT_PATTERN, fullmatch=True)})
    return train | predict


NOT_INT = (st.text(max_size=8) | st.floats(allow_nan=True) | st.booleans()
           | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3),
                                                                   st.integers(), max_size=1))
HUGE = st.integers(1000, 200_000).map(lambda n: "a" * n)


def _out_of(low: int, high: int) -> st.SearchStrategy[Any]:
    return st.integers(max_value=low - 1) | st.integers(min_value=high + 1) | NOT_INT


def _not_id(kind: str) -> st.SearchStrategy[Any]:
    other = "model" if kind == "release" else "release"
    return (st.text(max_size=30) | HUGE | st.integers() | st.none() | ids(other)
            | HEX.map(lambda h: f"{kind}-{h}\n") | HEX.map(lambda h: f"{kind}-{h.upper()}X"))


BREAKS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "train": {
        "epochs": _out_of(1, limits.MAX_EPOCHS),
        "steps": _out_of(1, limits.MAX_STEPS),
        "seed": _out_of(limits.MIN_SEED, limits.MAX_SEED) | st.none(),
        "budget": (st.text(max_size=12).filter(lambda b: b not in limits.budget_names())
                   | HUGE | st.integers() | st.none() | st.lists(st.just("full"), max_size=2)),
        "releases": (st.just([]) | st.integers() | st.none() | st.text(max_size=20)
                     | st.lists(_not_id("release"), min_size=1, max_size=3)
                     | ids("release").map(lambda r: [r, r])
                     | st.lists(ids("release"), min_size=limits.MAX_POOLED_RELEASES + 1,
                                max_size=limits.MAX_POOLED_RELEASES + 3, unique=True)),
    },
    "predict": {
        "release": _not_id("release"),
        "model": _not_id("model").filter(lambda m: m is not None),
        "split": (st.text(max_size=70).filter(
            lambda s: not limits.SPLIT_PATTERN.fullmatch(s)) | HUGE | st.integers()
            | st.none() | st.just("test\n") | st.just("a" * 65)),
    },
}


@st.composite
def bad_specs(draw, release: st.SearchStrategy[str] | None = None) -> tuple[Any, str]:
    """A spec with one thing wrong, and the field a refusal must name ("" for the whole)."""
    spec = draw(good_specs(release))
    how = draw(st.sampled_from(["field", "field", "field", "unknown", "kind", "whole"]))
    if how == "field":
        field = draw(st.sampled_from(sorted(BREAKS[spec["kind"]])))
        spec[field] = draw(BREAKS[spec["kind"]][field])
        return spec, field
    if how == "unknown":
        key = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1,
                           max_size=20).filter(
            lambda k: k not in ("kind", "releases", "release", "model", "split", "budget",
                                "seed", "epochs", "steps")) | st.sampled_from(
            ["releases", "budget"] if spec["kind"] == "predict" else ["release", "split"]))
        spec[key] = draw(st.integers() | st.text(max_size=5))
        return spec, key
    if how == "kind":
        spec["kind"] = draw(st.text(max_size=10).filter(lambda k: k not in limits.JOB_KINDS)
                            | st.integers() | st.none())
        return spec, "kind"
    return draw(st.lists(st.integers(), max_size=3) | st.text(max_size=10) | st.integers()
                | st.none()), ""
