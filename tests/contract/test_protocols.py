"""The same checks for every registered protocol: add a protocol, get these tests for free.

Each protocol runs once, in memory, with a representative scheme (fitted with its
contract parameters on a small real set): every message of the run goes through the
disk codec, the HTTP codec (the service's tar stream and safe extraction) and memory
and comes back equal; no owner message carries the key or owner state; the row built
from the run validates against the scorecard schema and the protocol describes it.

A fifth protocol written here, ``toy_two_rounds`` (the owner sends a number, the
processor answers, twice), runs through ``run_task``, the command line's in-memory bench
and the row schema with no change outside this file.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medveil.attacks.suite import seeded_key
from medveil.data import load_dataset
from medveil.keys import Key
from medveil.protocols import (
    PROTOCOLS,
    AttackSurface,
    Decoded,
    Message,
    OwnerHalf,
    ProcessorHalf,
    Protocol,
    available_protocols,
    get_protocol,
    register_protocol,
    run_task,
)
from medveil.protocols.messages import OWNER, PROCESSOR, from_bundle, read_message, to_bundle
from medveil.schemes import SCHEMES, available_schemes, create, get_scheme_class, register
from medveil.schemes.plain import PlainScheme
from tests.conftest import key_secret
from tests.unit.test_bench_rows import TINY

PROTOCOL_NAMES = available_protocols()
#: read options a protocol's representative scheme needs (ckks's HE network: 28 px)
READ = {"encrypted_inference": {"size": 28}, "encoded_segmentation": {"size": 64}}


def representative(protocol: str) -> str:
    """The first registered scheme that runs under ``protocol`` (plain for view)."""
    return next(n for n in available_schemes() if get_scheme_class(n).protocol == protocol)


_RUNS: dict[str, tuple] = {}


def run_once(protocol_name: str):
    """(scheme, data, key, outcome) of one in-memory run of ``protocol_name``."""
    if protocol_name not in _RUNS:
        name = representative(protocol_name)
        cls = get_scheme_class(name)
        source = "cxr-demo" if "classification" in cls.tasks else "chase-demo"
        data = load_dataset(source, **READ.get(protocol_name, {}))
        if source == "cxr-demo":
            from medveil.bench import subsample_for_budget

            data = subsample_for_budget(data, TINY, 0)
        key = Key.generate()
        scheme = create(name, **cls.contract_params).fit(
            data.splits_subset(cls.fit_splits), key=key, seed=0)
        outcome = run_task(get_protocol(protocol_name), scheme, data, key=key, budget=TINY,
                           seed=0, wrong_key=seeded_key("wrong", 0))
        _RUNS[protocol_name] = (scheme, data, key, outcome)
    return _RUNS[protocol_name]


def assert_same(a: Message, b: Message) -> None:
    assert (a.kind, a.sender, a.round) == (b.kind, b.sender, b.round)
    assert a.header == b.header
    assert a.arrays.keys() == b.arrays.keys() and a.extras.keys() == b.extras.keys()
    for split in a.arrays:
        assert a.arrays[split].keys() == b.arrays[split].keys()
        for kind, array in a.arrays[split].items():
            other = b.arrays[split][kind]
            assert other.dtype == array.dtype and np.array_equal(other, array, equal_nan=True)
    for name, array in a.extras.items():
        assert np.array_equal(b.extras[name], array)


def test_every_scheme_protocol_is_registered():
    assert set(PROTOCOL_NAMES) >= {"view", "key_holder", "encrypted_inference",
                                   "encoded_segmentation"}
    for name in available_schemes():
        protocol = get_protocol(get_scheme_class(name).protocol)
        assert all(callable(getattr(get_scheme_class(name), m)) for m in protocol.scheme_needs)


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_messages_round_trip_through_disk_http_and_memory(protocol, tmp_path):
    from medveil.service.transfer import extract_bundle, tar_stream

    scheme, data, key, outcome = run_once(protocol)
    assert outcome.transcript[0].sender == OWNER and outcome.transcript[0].round == 0
    for index, message in enumerate(outcome.transcript):
        sealing = key if message.sender == OWNER else None
        # memory: the bundle the bench hands the other half
        assert_same(message, from_bundle(to_bundle(message, key=sealing)))
        # disk: the folder `protect` / `predict` write
        from medveil.protocols.messages import write_message

        folder = tmp_path / f"m{index}"
        write_message(folder, message, key=sealing)
        fmt = to_bundle(message).manifest["format"]
        assert_same(message, read_message(folder, key=sealing, fmt=fmt))
        # HTTP: the same folder as the service streams it, unpacked as the service does
        archive = tmp_path / f"m{index}.tar"
        archive.write_bytes(b"".join(tar_stream(folder)))
        unpacked = tmp_path / f"u{index}"
        unpacked.mkdir(mode=0o700)
        extract_bundle(archive, unpacked, what="message")
        assert_same(message, read_message(unpacked, key=sealing, fmt=fmt))


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_no_key_or_owner_state_reaches_the_processor(protocol):
    scheme, data, key, outcome = run_once(protocol)
    secret = key_secret(key)
    state_arrays = [np.asarray(v) for v in _flat_arrays(scheme.state_dict())
                    if np.asarray(v).size >= 16]
    for message in outcome.transcript:
        if message.sender != OWNER:
            continue
        arrays = [a for kinds in message.arrays.values() for a in kinds.values()]
        # what a scheme ships the processor on purpose (ckks's public context, and its model
        # in the plain-model setting) is declared by the scheme and documented
        shipped = set(scheme.processor_extras(key)) if "processor_extras" in \
            get_protocol(protocol).scheme_needs else set()
        arrays += [v for k, v in message.extras.items() if k not in shipped]
        for array in arrays:
            assert secret not in np.ascontiguousarray(array).tobytes()
            for state in state_arrays:  # the fitted networks, host images ... stay home
                assert not (state.shape == array.shape and np.array_equal(state, array))
        assert secret.hex() not in str(message.header)


def _flat_arrays(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _flat_arrays(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _flat_arrays(item)
    elif isinstance(value, np.ndarray) or hasattr(value, "numpy"):
        yield value if isinstance(value, np.ndarray) else value.detach().numpy()


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_its_row_validates_against_the_schema_and_renders(protocol):
    from medveil.bench import validate_scorecard
    from medveil.report import _verdict
    from medveil.rows import Row

    scheme, data, key, outcome = run_once(protocol)
    row = Row(scheme=scheme.name, protocol=protocol, params=dict(scheme.params),
              utility=outcome.decoded.metrics(data.split("test")),
              protocol_section=outcome.section, rounds=outcome.rounds,
              messages=[{"sender": m.sender, "kind": m.kind, "round": m.round,
                         "bytes": m.nbytes} for m in outcome.transcript]).to_dict()
    surface = get_protocol(protocol).attack_surface(outcome)
    assert (surface.views is None) == (surface.not_applicable is not None)
    if surface.views is not None:
        test = data.split("test")
        assert len(surface.views["test"]) == len(test)
        assert len(surface.views["train"]) == len(data.split("train"))
    validate_scorecard(_scorecard(row, data))
    said = _verdict(row, None, "auc" if data.task == "classification" else "dice")
    assert f"`{protocol}` protocol" in said
    for sentence in get_protocol(protocol).describe(row.get("protocol_section") or {}, row):
        assert sentence in said


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_its_model_is_asked_about_membership_in_its_own_domain(protocol):
    """Every protocol offers its task model to the membership attacks (or says why not):
    the target scores members and non-members of its own domain with confidences in
    (0, 1], and a reference model trained the same way scores them too."""
    from medveil.attacks.membership import Samples, membership_attacks

    scheme, data, key, outcome = run_once(protocol)
    target = get_protocol(protocol).membership_target(outcome, data, budget=TINY, seed=0)
    assert not isinstance(target, str), target
    assert target.domain and target.threat
    train, val = target.splits["train"], target.splits["val"]
    assert len(train) == len(data.split("train")) and len(val) == len(data.split("val"))
    probe = Samples(np.concatenate([train.inputs[:3], val.inputs[:3]]),
                    np.concatenate([train.truth[:3], val.truth[:3]]))
    scores = target.score(probe)
    assert scores.shape == (len(probe),) and np.all((scores > 0) & (scores <= 1))
    reference = target.fit_reference(train.take(np.arange(4, len(train))), val.take(
        np.arange(min(2, len(val)))), 7)
    assert np.all(np.isfinite(reference(probe)))
    found = membership_attacks(target, references=1, seed=0)
    if len(val) < 2:  # CHASE cut to the contract's size: one validation image
        assert "validation images" in found["not_measured"]
        return
    assert found["domain"] == target.domain
    assert 0 <= found["loss"]["auc"] <= 1 and 0 <= found["rmia"]["auc"] <= 1


def _scorecard(row: dict, data) -> dict:
    from medveil import __version__
    from medveil.bench import SCORECARD_SCHEMA

    return {"schema": SCORECARD_SCHEMA, "medveil_version": __version__, "created": "now",
            "mode": "smoke", "seed": 0,
            "machine": {"cpu": "x", "cores": 1, "torch": "x", "device": "cpu"},
            "dataset": {"name": data.name, "task": data.task,
                        "image_size": list(data.image_shape[1:]),
                        "n_train": 1, "n_test": 1}, "results": [row]}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
HOSTILE = st.sampled_from([Key.generate(), PlainScheme(), np.array([Key.generate()],
                                                                    dtype=object),
                           b"raw bytes", {1, 2}, float("nan")])


@settings(max_examples=60, deadline=None)
@given(header=JSON, hostile=HOSTILE, where=st.sampled_from(["header", "array", "extra"]),
       sender=st.sampled_from([OWNER, PROCESSOR]))
def test_a_message_refuses_anything_but_arrays_and_json(header, hostile, where, sender):
    """A key, a scheme (owner state), an object array, bytes, a set or NaN, anywhere in a
    message, is refused when the message is made: it can never be sent."""
    Message(kind="x", sender=sender, round=0, header={"h": header})  # JSON alone is fine
    with pytest.raises((TypeError, ValueError)):
        if where == "header":
            Message(kind="x", sender=sender, round=0, header={"h": header, "bad": hostile})
        elif where == "array":
            Message(kind="x", sender=sender, round=0, arrays={"test": {"view": hostile}})
        else:
            Message(kind="x", sender=sender, round=0, extras={"e": hostile})


# ----------------------------------------------------------------------------- a toy protocol
class ToyOwner(OwnerHalf):
    """Round 0: the number of test images; round 1: each test image's mean intensity.
    The processor answers a count with an acknowledgement, intensities with scores."""

    def start(self) -> Message:
        n = len(self.data.split("test"))
        return Message(kind="count", sender=OWNER, round=0, extras={"n": np.array([n])},
                       header={"protocol": {"name": self.protocol.name}})

    def receive(self, message: Message | None) -> Message | None:
        if message.kind == "ack":
            means = self.data.split("test").images.mean(axis=(1, 2, 3))
            bias = self.scheme.count_bias()
            return Message(kind="means", sender=OWNER, round=1,
                           extras={"means": (means + bias).astype(np.float64)},
                           header={"protocol": {"name": self.protocol.name}})
        scores = message.extras["scores"]
        self.decoded = Decoded("classification",
                               probabilities=np.stack([1 - scores, scores], axis=1))
        self.figures["protect_ms_per_image"] = 0.0
        return None

    def section(self, *, wrong_key) -> dict:
        return {"rounds_seen": 2}


class ToyProcessor(ProcessorHalf):
    def receive(self, messages: list[Message]) -> list[Message | None]:
        answers = []
        for message in messages:
            if message.kind == "count":
                self.seen = int(message.extras["n"][0])
                answers.append(Message(kind="ack", sender=PROCESSOR, round=0))
            else:
                means = message.extras["means"]
                assert len(means) == self.seen
                scores = (means - means.min()) / max(np.ptp(means), 1e-9)
                answers.append(Message(kind="scores", sender=PROCESSOR, round=1,
                                       extras={"scores": scores}))
        self.model = "no model"
        return answers


class ToyTwoRounds(Protocol):
    name = "toy_two_rounds"
    summary = "the owner sends a number, the processor answers, twice"
    scheme_needs = ("count_bias",)

    def release(self, scheme, data, *, key):
        raise NotImplementedError("the toy's halves say what they send")

    def owner_half(self, scheme, data, *, key, budget, seed, clock=None):
        return ToyOwner(self, scheme, data, key=key, budget=budget, seed=seed, clock=clock)

    def processor_half(self, *, budget, seed, clock=None, progress=False, params=None):
        return ToyProcessor(self, budget=budget, seed=seed, clock=clock, progress=progress)

    def attack_surface(self, outcome) -> AttackSurface:
        return AttackSurface(views=None, not_applicable="the toy sends one number per image")

    def describe(self, section, row) -> list[str]:
        return [f"the toy saw {section['rounds_seen']} rounds"]


class ToyScheme(PlainScheme):
    name = "toy_count"
    protocol = "toy_two_rounds"
    invertible = False
    reference_only = True

    def count_bias(self) -> float:
        return 0.0


@pytest.fixture()
def toy():
    """The toy protocol and a scheme that names it, registered for one test only."""
    register_protocol(ToyTwoRounds)
    register(ToyScheme)
    yield
    SCHEMES.pop(ToyScheme.name, None)
    PROTOCOLS.pop(ToyTwoRounds.name, None)


def test_registration_checks_the_protocol_and_its_capabilities(toy):
    class Unknown(PlainScheme):
        name, protocol = "toy_unknown", "no_such_protocol"

    class Lacking(PlainScheme):
        name, protocol = "toy_lacking", "toy_two_rounds"

    with pytest.raises(ValueError, match="no_such_protocol"):
        register(Unknown)
    with pytest.raises(ValueError, match="count_bias"):
        register(Lacking)
    assert "toy_unknown" not in SCHEMES and "toy_lacking" not in SCHEMES


def test_a_two_round_protocol_runs_through_run_task(toy, cxr):
    from medveil.bench import subsample_for_budget

    data = subsample_for_budget(cxr, TINY, 0)
    key = Key.generate()
    scheme = create("toy_count").fit(data.split("train"), key=key)
    outcome = run_task(get_protocol("toy_two_rounds"), scheme, data, key=key, budget=TINY,
                       seed=0, wrong_key=seeded_key("wrong", 0))
    assert [(m.sender, m.kind, m.round) for m in outcome.transcript] == [
        (OWNER, "count", 0), (PROCESSOR, "ack", 0), (OWNER, "means", 1),
        (PROCESSOR, "scores", 1)]
    assert outcome.rounds == 2 and outcome.section == {"rounds_seen": 2}
    assert set(outcome.decoded.metrics(data.split("test"))) >= {"auc", "accuracy"}


def test_a_two_round_protocol_runs_through_the_cli_bench_and_the_row_schema(toy, tmp_path):
    """The command line's in-memory path (`medveil bench`, in this process so that the toy
    is registered): the row validates against the schema and the report describes it."""
    from typer.testing import CliRunner

    from medveil.cli import app

    result = CliRunner().invoke(app, ["bench", "--schemes", "toy_count", "--budget", "smoke",
                                      "--out", str(tmp_path / "bench"), "--quiet"])
    assert result.exit_code == 0, result.output
    import json

    card = json.loads((tmp_path / "bench" / "scorecard.json").read_text())
    row = next(r for r in card["results"] if r["scheme"] == "toy_count")
    assert row["status"] == "ok", row.get("error")
    assert row["protocol"] == "toy_two_rounds" and row["rounds"] == 2
    assert row["protocol_section"] == {"rounds_seen": 2}
    assert row["attacks"]["not_applicable"] == "the toy sends one number per image"
    assert "the toy saw 2 rounds" in (tmp_path / "bench" / "report.md").read_text()

