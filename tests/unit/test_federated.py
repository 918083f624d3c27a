"""The federated protocol's pieces on real images: dealing to centres, the privacy
ledger, a centre's round (plain and DP-SGD), the aggregator's checks and average, and
the two halves against each other, each treating the other as an adversary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("flwr")
pytest.importorskip("opacus")

from medveil.bench import subsample_for_budget  # noqa: E402
from medveil.errors import ConfigError, DataError, IntegrityError  # noqa: E402
from medveil.federated.aggregator import (  # noqa: E402
    Aggregator,
    FederatedSettings,
    check_update,
    initial_state,
    plan_from_config,
    plan_to_config,
)
from medveil.federated.centre import train_locally  # noqa: E402
from medveil.federated.deal import deal_to_centres  # noqa: E402
from medveil.federated.ledger import PrivacyLedger, noise_for_epsilon  # noqa: E402
from medveil.protocols import Message, get_protocol, run_task  # noqa: E402
from medveil.protocols.federated import pack_weights, unpack_weights  # noqa: E402
from medveil.protocols.messages import OWNER, PROCESSOR  # noqa: E402
from medveil.schemes import create  # noqa: E402
from tests.unit.test_bench_rows import TINY  # noqa: E402


@pytest.fixture(scope="module")
def small(cxr):
    """60 training, 30 test real chest X-rays (the bundled demo set, 64 px)."""
    return subsample_for_budget(cxr, TINY, 0)


@pytest.fixture(scope="module")
def model():
    return initial_state(FederatedSettings(width=8), in_channels=1, num_classes=2, seed=0)


# ----------------------------------------------------------------------------- dealing
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(centres=st.integers(1, 5), split=st.sampled_from(["iid", "dirichlet"]),
       alpha=st.floats(0.05, 50), seed=st.integers(0, 2**32 - 1))
def test_every_image_goes_to_exactly_one_centre_and_each_trains(cxr, centres, split, alpha,
                                                                 seed):
    rows = deal_to_centres(cxr, centres, split=split, alpha=alpha, seed=seed)
    together = np.concatenate(rows)
    assert len(rows) == centres
    assert np.array_equal(np.sort(together), np.arange(len(cxr)))
    for part in rows:
        assert (cxr.splits[part] == "train").any()
    again = deal_to_centres(cxr, centres, split=split, alpha=alpha, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(rows, again, strict=True))


def test_a_small_alpha_skews_labels_and_iid_does_not(cxr):
    def spread(rows):
        shares = [cxr.labels[r][cxr.splits[r] == "train"].mean() for r in rows]
        return max(shares) - min(shares)

    assert spread(deal_to_centres(cxr, 3, split="dirichlet", alpha=0.1, seed=0)) > 0.3
    assert spread(deal_to_centres(cxr, 3, split="iid", seed=0)) < 0.15


def test_unknown_split_is_refused(cxr):
    with pytest.raises(ConfigError, match="split must be one of"):
        deal_to_centres(cxr, 3, split="skewed", seed=0)


# ----------------------------------------------------------------------------- ledger
def test_the_ledger_composes_rounds_and_a_target_epsilon_is_spent_not_passed():
    q, steps = 0.1, 10
    sigma = noise_for_epsilon(3.0, delta=1e-5, sample_rate=q, steps=5 * steps)
    ledger, spent = PrivacyLedger(), []
    for _ in range(5):
        ledger = ledger.with_round(sigma, q, steps)
        spent.append(ledger.epsilon(1e-5))
    assert all(a < b for a, b in zip(spent, spent[1:], strict=False))
    assert 2.7 < spent[-1] <= 3.0 + 1e-6
    back = PrivacyLedger.from_json(ledger.to_json())
    assert back.epsilon(1e-5) == pytest.approx(spent[-1])


@settings(max_examples=60, deadline=None)
@given(text=st.one_of(
    st.text(max_size=40),
    st.builds(lambda h: json.dumps({"mechanism": "rdp", "history": h}),
              st.lists(st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-3, 3),
                                          st.text(max_size=3)), max_size=4), max_size=3)),
    st.builds(lambda m: json.dumps({"mechanism": m, "history": [[1.0, 0.1, 3]]}),
              st.text(max_size=5))))
def test_a_forged_ledger_is_refused_or_reads_as_steps_an_accountant_took(text):
    try:
        ledger = PrivacyLedger.from_json(text)
    except DataError as exc:
        assert "privacy ledger" in str(exc) or "no accountant took" in str(exc)
        return
    for sigma, q, n in ledger.history:
        assert np.isfinite(sigma) and sigma >= 0 and 0 < q <= 1 and n >= 0
    assert np.isfinite(ledger.epsilon(1e-5)) or ledger.epsilon(1e-5) == float("inf")


def test_the_ledger_file_is_private_and_atomic(tmp_path):
    path = tmp_path / "ledger.json"
    PrivacyLedger().with_round(1.0, 0.1, 10).save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert PrivacyLedger.load(path).history == [(1.0, 0.1, 10)]
    assert PrivacyLedger.load(tmp_path / "none.json").history == []


# ----------------------------------------------------------------------------- a centre
def test_a_round_is_reproducible_and_dp_spends_what_the_ledger_says(small, model):
    config, weights = model
    train = small.split("train")
    for settings_ in (FederatedSettings(width=8, batch_size=16, rounds=2),
                      FederatedSettings(width=8, batch_size=16, rounds=2, noise=1.0)):
        plan = settings_.plan(1)
        one = train_locally(config, weights, train, plan=plan, ledger=PrivacyLedger(),
                            seed=0, centre=0)
        two = train_locally(config, weights, train, plan=plan, ledger=PrivacyLedger(),
                            seed=0, centre=0)
        other = train_locally(config, weights, train, plan=plan, ledger=PrivacyLedger(),
                              seed=1, centre=0)
        assert all(np.array_equal(one.state[k], two.state[k]) for k in weights)
        assert any(not np.array_equal(one.state[k], other.state[k]) for k in weights)
        assert any(not np.array_equal(one.state[k], weights[k]) for k in weights)
        if settings_.private:
            assert one.ledger.history and one.ledger.history[0][0] == 1.0
            assert one.ledger.epsilon(1e-5) > 0
        else:
            assert one.ledger.history == []


def test_a_centre_declines_the_round_that_would_pass_max_epsilon(small, model):
    config, weights = model
    plan = FederatedSettings(width=8, batch_size=16, rounds=50, noise=0.6,
                             max_epsilon=1.0).plan(1)
    result = train_locally(config, weights, small.split("train"), plan=plan,
                           ledger=PrivacyLedger(), seed=0, centre=2)
    assert result.state is None and "max_epsilon 1.0" in result.declined
    assert result.ledger.history == []  # nothing spent


# ----------------------------------------------------------------------------- aggregator
def test_the_average_is_weighted_by_examples(model):
    _, weights = model
    a = {k: v + 1 for k, v in weights.items()}
    b = {k: v - 2 for k, v in weights.items()}
    merged = Aggregator(FederatedSettings()).aggregate(weights, [(a, 10), (b, 30)])
    for k in weights:
        assert merged[k].dtype == weights[k].dtype
        assert np.allclose(merged[k], (10 * a[k] + 30 * b[k]) / 40, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(change=st.sampled_from(["nan", "inf", "shape", "dtype", "extra", "missing"]),
       which=st.integers(0, 1000))
def test_a_hostile_centre_s_update_is_refused(change, which):
    _, weights = initial_state(FederatedSettings(width=8), in_channels=1, num_classes=2,
                               seed=0)
    names = sorted(k for k, v in weights.items() if v.dtype.kind == "f" and v.size)
    name = names[which % len(names)]
    forged = {k: v.copy() for k, v in weights.items()}
    if change == "nan":
        forged[name].flat[which % forged[name].size] = np.nan
    elif change == "inf":
        forged[name].flat[0] = np.inf
    elif change == "shape":
        forged[name] = np.zeros((*forged[name].shape, 2), forged[name].dtype)
    elif change == "dtype":
        forged[name] = forged[name].astype(np.float64)
    elif change == "extra":
        forged["head.9.weight"] = np.zeros(3, np.float32)
    else:
        del forged[name]
    with pytest.raises(IntegrityError, match="refuse it"):
        check_update(forged, weights, where="centre 1's update")
    with pytest.raises(IntegrityError):
        Aggregator(FederatedSettings()).aggregate(weights, [(weights, 5), (forged, 5)])


@settings(max_examples=40, deadline=None)
@given(field=st.sampled_from(["round", "lr", "batch_size", "clip", "delta", "noise",
                              "epochs", "missing"]),
       value=st.one_of(st.just(float("nan")), st.just(-1), st.just(0), st.just("x"),
                       st.just(None), st.just(1e9)))
def test_a_hostile_aggregator_s_plan_is_refused_or_is_a_plan(field, value):
    config = plan_to_config(FederatedSettings(rounds=3).plan(1))
    if field == "missing":
        config.pop("lr")
    else:
        config[field] = value
    try:
        plan = plan_from_config(config)
    except IntegrityError:
        return
    assert plan.batch_size >= 1 and plan.epochs >= 1 and plan.clip > 0
    assert 0 < plan.delta < 1 and np.isfinite(plan.lr)


# ----------------------------------------------------------------------------- the halves
@pytest.fixture(scope="module")
def federated_run(small):
    scheme = create("federated", centres=2, rounds=2, batch_size=16, noise=1.0)
    outcome = run_task(get_protocol("federated"), scheme, small, key=None, budget=TINY,
                       seed=0)
    return scheme, outcome


def test_only_model_updates_leave_a_centre(small, federated_run):
    _, outcome = federated_run
    centre_messages = [m for m in outcome.transcript if m.sender == OWNER]
    kinds = {m.kind for m in centre_messages}
    assert kinds == {"join", "update"}
    weights = outcome.processor.weights
    for message in centre_messages:
        assert message.arrays == {}  # no split, no image
        if message.kind == "update":
            sent = unpack_weights(message)
            assert set(sent) == set(weights)
            assert all(sent[k].shape == weights[k].shape for k in weights)
        assert set(message.header) <= {"scheme", "protocol", "parameters", "examples",
                                       "image_shape",
                                       "num_classes", "task", "steps", "epsilon",
                                       "noise_multiplier"}
    assert {m.kind for m in outcome.transcript if m.sender == PROCESSOR} == {"train",
                                                                             "final"}
    assert outcome.rounds == 4  # join, two rounds, final


def test_every_test_image_is_predicted_at_home_and_epsilon_is_reported(small,
                                                                       federated_run):
    _, outcome = federated_run
    test = small.split("test")
    assert outcome.decoded.probabilities.shape == (len(test), 2)
    assert np.allclose(outcome.decoded.probabilities.sum(axis=1), 1, atol=1e-5)
    section = outcome.section
    assert section["rounds_run"] == 2 and section["private"] is True
    assert len(section["epsilon"]) == 2 and all(e > 0 for e in section["epsilon"])
    assert all(len(r) == 2 and r[0] < r[1] for r in section["epsilon_per_round"])
    # a centre's predictions are the global model's on its own images
    from medveil.tasks import predict_proba

    assert np.allclose(predict_proba(outcome.model, test.images),
                       outcome.decoded.probabilities, atol=1e-5)


def test_a_run_stops_before_a_centre_passes_max_epsilon(small):
    scheme = create("federated", centres=2, rounds=6, batch_size=16, noise=0.8,
                    max_epsilon=8.0)
    outcome = run_task(get_protocol("federated"), scheme, small, key=None, budget=TINY,
                       seed=0)
    section = outcome.section
    assert section["stopped"] and "max_epsilon" in section["stopped"]
    assert 0 < section["rounds_run"] < 6
    assert max(section["epsilon"]) <= 8.0
    assert outcome.decoded.probabilities.shape[0] == len(small.split("test"))


def test_a_hostile_aggregator_cannot_make_a_centre_build_a_huge_network(small):
    protocol = get_protocol("federated")
    scheme = create("federated", centres=2, rounds=1, batch_size=16)
    centre = protocol.owner_halves(scheme, small, key=None, budget=TINY, seed=0)[0]
    centre.start()
    config, weights = initial_state(FederatedSettings(width=8), in_channels=1,
                                    num_classes=2, seed=0)
    plan = plan_to_config(FederatedSettings(rounds=1).plan(1))
    extras, names = pack_weights(weights)
    for forged in ({**config, "width": 10**6}, {**config, "norm": "batch"},
                   {**config, "in_channels": 3}, {**config, "extra": 1}, "SmallCNN"):
        with pytest.raises(IntegrityError, match="does not build"):
            centre.receive(Message(kind="train", sender=PROCESSOR, round=1, extras=extras,
                                   header={"plan": plan, "net_config": forged,
                                           "parameters": names}))
    with pytest.raises(IntegrityError, match="parameter names"):
        centre.receive(Message(kind="train", sender=PROCESSOR, round=1, extras=extras,
                               header={"plan": plan, "net_config": config,
                                       "parameters": names[:-1]}))


def test_a_centre_that_inflates_its_weight_is_refused(small):
    protocol = get_protocol("federated")
    scheme = create("federated", centres=2, rounds=2, batch_size=16)
    owners = protocol.owner_halves(scheme, small, key=None, budget=TINY, seed=0)
    aggregator = protocol.processor_half(budget=TINY, seed=0, params=scheme.params)
    orders = aggregator.receive([o.start() for o in owners])
    updates = [o.receive(m) for o, m in zip(owners, orders, strict=True)]
    forged = Message(kind="update", sender=OWNER, round=updates[1].round,
                     extras=updates[1].extras,
                     header={**updates[1].header, "examples": 10**6})
    with pytest.raises(IntegrityError, match="weighted its update"):
        aggregator.receive([updates[0], forged])


def test_a_resumed_run_equals_an_uninterrupted_one(small, tmp_path, monkeypatch):
    """A crash in round 3 of 4; the run resumes from the checkpoint of round 2 with new
    halves and ends with the uninterrupted run's global model."""
    import medveil.federated.centre as centre_module
    from medveil.protocols.runner import run_rounds

    protocol = get_protocol("federated")
    scheme = create("federated", centres=2, rounds=4, batch_size=16)

    def run(checkpoint=None, resume=False):
        owners = protocol.owner_halves(scheme, small, key=None, budget=TINY, seed=0)
        aggregator = protocol.processor_half(budget=TINY, seed=0, params=scheme.params)
        aggregator.checkpoint = checkpoint
        if resume:
            aggregator.load_checkpoint(checkpoint)
        run_rounds(owners, aggregator)
        return aggregator

    whole = run()
    real = centre_module.train_locally

    def crash_in_round_3(*args, plan, **kwargs):
        if plan.round == 3:
            raise RuntimeError("the machine went down")
        return real(*args, plan=plan, **kwargs)

    path = tmp_path / "run.ckpt"
    monkeypatch.setattr(centre_module, "train_locally", crash_in_round_3)
    with pytest.raises(RuntimeError, match="went down"):
        run(path)
    monkeypatch.setattr(centre_module, "train_locally", real)
    assert path.stat().st_mode & 0o777 == 0o600
    resumed = run(path, resume=True)
    assert resumed.rounds_run == 4
    for name, value in whole.weights.items():
        assert np.allclose(resumed.weights[name], value, atol=1e-6), name


def test_a_forged_checkpoint_is_refused(small, tmp_path):
    protocol = get_protocol("federated")
    aggregator = protocol.processor_half(budget=TINY, seed=0,
                                         params=create("federated").params)
    path = tmp_path / "forged.ckpt"
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(IntegrityError):
        aggregator.load_checkpoint(path)
