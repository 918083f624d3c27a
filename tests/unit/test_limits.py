"""One set of job bounds (medveil.limits), the same on the command line and the service:
generated specs, good ones accepted and normalised, each broken one refused with a
ConfigError naming the field; `medveil train` / `remote train` refuse the same values
before anything is written or sent."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medveil import limits
from medveil.errors import ConfigError
from medveil.limits import JobSpec, check_job_spec
from tests.conftest import invoke
from tests.job_specs import bad_specs, good_specs

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(spec=good_specs())
def test_every_spec_within_the_bounds_is_accepted_and_normalised(spec):
    checked = check_job_spec(spec)
    assert isinstance(checked, JobSpec)
    stored = checked.to_json()
    assert set(stored) == {"train": {"kind", "releases", "budget", "seed", "epochs", "steps"},
                           "predict": {"kind", "release", "model", "split"}}[spec["kind"]]
    assert check_job_spec(json.loads(json.dumps(stored))) == checked  # stable once stored
    for name, value in spec.items():
        assert stored[name] == value


@settings(max_examples=500, deadline=None)
@given(case=bad_specs())
def test_a_spec_with_one_thing_wrong_is_refused_naming_it(case):
    spec, field = case
    try:
        check_job_spec(spec)
    except ConfigError as exc:
        message = str(exc)
        assert f"'{field}'" in message or (field in message if field else True), message
        assert len(message) < 400
        return
    raise AssertionError(f"accepted {spec!r}")


@settings(max_examples=500, deadline=None)
@given(spec=JSON | st.dictionaries(st.sampled_from(["kind", "releases", "release", "model",
                                                    "split", "budget", "seed", "epochs",
                                                    "steps"]), JSON))
def test_any_json_is_a_checked_spec_or_a_config_error(spec):
    try:
        checked = check_job_spec(spec)
    except ConfigError:
        return
    assert 1 <= len(checked.releases) <= limits.MAX_POOLED_RELEASES or checked.kind == "predict"
    assert limits.MIN_SEED <= checked.seed <= limits.MAX_SEED
    assert checked.epochs is None or 1 <= checked.epochs <= limits.MAX_EPOCHS


def test_the_bounds_are_named_constants():
    assert limits.MAX_SEED == 2**32 - 1 and limits.MIN_SEED == 0
    assert set(limits.budget_names()) == {"full", "quick", "demo", "smoke"}
    assert limits.MAX_JOB_BODY_BYTES <= 2**20 and limits.MAX_POOLED_RELEASES >= 2


# -- the command line refuses the same values, before anything is written or sent

OUT_OF_BOUNDS = st.sampled_from(["epochs", "steps", "seed"]).flatmap(
    lambda name: st.tuples(st.just(name), st.one_of(
        st.integers(max_value={"epochs": 0, "steps": 0, "seed": -1}[name]),
        st.integers(min_value={"epochs": limits.MAX_EPOCHS, "steps": limits.MAX_STEPS,
                               "seed": limits.MAX_SEED}[name] + 1))))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=OUT_OF_BOUNDS, remote=st.booleans())
def test_train_and_remote_train_refuse_what_the_service_refuses(tmp_path, case, remote):
    name, value = case
    assert _service_refuses({name: value})
    if remote:  # no server listens there: a refusal comes before any connection
        args = ["remote", "train", "--server", "http://127.0.0.1:9", "--token-file",
                str(tmp_path / "none.token"), "--release", "release-" + "0" * 16]
    else:
        args = ["train", "--data", "cxr-demo", "--out", str(tmp_path / "m.pt")]
    code, output = invoke(*args, f"--{name}", str(value))
    assert code == 2, output
    assert f"--{name}" in output and "cannot reach" not in output and "token" not in output
    assert not (tmp_path / "m.pt").exists()


def _service_refuses(fields: dict) -> bool:
    try:
        check_job_spec({"kind": "train", "releases": ["release-" + "0" * 16], **fields})
    except ConfigError:
        return True
    return False


def test_remote_train_refuses_a_release_named_twice_and_an_unknown_budget(tmp_path):
    base = ["remote", "train", "--server", "http://127.0.0.1:9", "--token-file",
            str(tmp_path / "none.token")]
    twice = "release-" + "1" * 16
    code, output = invoke(*base, "--release", twice, "--release", twice)
    assert code == 2 and "more than once" in output and len(output.strip().splitlines()) == 1
    code, output = invoke(*base, "--release", twice, "--budget", "nope")
    assert code == 2 and "'budget'" in output and "smoke" in output
    code, output = invoke(*base, "--release", "not-an-id")
    assert code == 2 and "release id" in output


def test_train_refuses_an_unknown_budget_before_reading_any_data(tmp_path):
    code, output = invoke("train", "--data", str(tmp_path / "absent"), "--out",
                          str(tmp_path / "m.pt"), "--budget", "nope")
    assert code == 2 and "'budget'" in output and not (tmp_path / "m.pt").exists()


@given(key=st.text(min_size=1, max_size=60).filter(lambda k: k not in (
    "kind", "release", "model", "split")) | st.sampled_from(["\ud800", "a\"b\\", "\n" * 50]))
def test_an_unknown_key_is_quoted_escaped_and_short(key):
    try:
        check_job_spec({"kind": "predict", "release": "release-" + "0" * 16, key: 1})
    except ConfigError as exc:
        message = str(exc)
        assert message.isascii() and len(message) < 200 and "\n" not in message
        assert json.dumps(key)[:20] in message
        return
    raise AssertionError(key)
