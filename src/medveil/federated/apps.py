"""The federated protocol as a Flower App: ``client_app`` (one per centre, on the
centre's SuperNode) and ``server_app`` (the aggregator, on the SuperLink), for Flower's
deployment runtime.

They run the same halves the bench runs in process
(:class:`~medveil.protocols.federated.CentreHalf`,
:class:`~medveil.protocols.federated.AggregatorHalf`); only the transport differs. A
medveil message crosses as a Flower ``RecordDict``: its arrays in an ``ArrayRecord``, its
kind, round and JSON header in a ``ConfigRecord`` (:func:`to_record`,
:func:`from_record`), read back through the same checks.

Where things live:

- a centre's ``--node-config``: ``data`` (its own data set: a folder or .npz medveil
  reads, with train and test splits), ``centre`` (its number, for its seeds), ``state``
  (a folder, 0700, for its privacy ledger: Flower starts a new ClientApp process per
  message, so the accountant lives in a file) and optionally ``size``; the data, the
  ledger and the test predictions (``state/predictions.npz``) never leave the node;
- the run's ``--run-config``: the ``federated`` scheme's parameters (``rounds``,
  ``noise``, ``epsilon``, ``max_epsilon`` ...), ``seed``, ``centres`` (the SuperNodes
  the aggregator waits for) and, on the SuperLink's machine, ``out`` (the global
  model's folder: ``checkpoint.npz`` after every round, which the next run with the
  same ``out`` resumes from, and ``model.npz`` at the end).

Flower's telemetry and update check are off unless the user turns them on
(:data:`medveil.federated.FLOWER_ENVIRONMENT`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medveil.federated import FLOWER_ENVIRONMENT

for _name, _value in FLOWER_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

from flwr.app import (  # noqa: E402  (telemetry off before Flower is imported)
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from medveil.errors import ConfigError, IntegrityError  # noqa: E402
from medveil.protocols import messages as medveil_messages  # noqa: E402

#: run-config keys that are not the scheme's parameters
RUN_KEYS = ("seed", "out")
#: how long the aggregator waits for every centre's SuperNode, and for a round
WAIT_FOR_CENTRES_S = 120.0
ROUND_TIMEOUT_S = 3600.0


# ----------------------------------------------------------------------------- records
def to_record(message: medveil_messages.Message) -> RecordDict:
    """A medveil message as Flower's records (arrays and a JSON header)."""
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in message.extras.items()})
    config = ConfigRecord({"kind": message.kind, "sender": message.sender,
                           "round": message.round, "header": json.dumps(message.header)})
    return RecordDict({"arrays": arrays, "config": config})


def from_record(record: RecordDict, *, sender: str) -> medveil_messages.Message:
    """A medveil message back from Flower's records, as the other side sent it (checked:
    its sender, JSON header and arrays are the message's own checks)."""
    try:
        config = record["config"]
        extras = {k: v.numpy() for k, v in record["arrays"].items()}
        message = medveil_messages.Message(
            kind=str(config["kind"]), sender=str(config["sender"]), round=int(config["round"]),
            extras=extras, header=json.loads(str(config["header"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"a Flower message is not a medveil federated message ({exc})"
                             ) from None
    if message.sender != sender:
        raise IntegrityError(f"a message claims to come from the {message.sender}, not the "
                             f"{sender}; refuse it")
    return message


# ----------------------------------------------------------------------------- settings
def scheme_params(run_config: dict[str, Any]) -> dict[str, Any]:
    """The ``federated`` scheme for this run, from the run config (checked as on the
    command line)."""
    from medveil.schemes import create

    return create("federated", **{k: v for k, v in run_config.items() if k not in RUN_KEYS})


def _budget():
    from medveil.budgets import get_budget

    return get_budget("full")


# ----------------------------------------------------------------------------- a centre
client_app = ClientApp()


def _centre(context: Context):
    """This node's centre: its data, its ledger (from its state folder) and the run's
    scheme; rebuilt for each message (Flower runs each in a new process)."""
    from medveil.data import load_dataset
    from medveil.federated.ledger import PrivacyLedger
    from medveil.protocols import get_protocol
    from medveil.protocols.federated import CentreHalf

    node = context.node_config
    for name in ("data", "centre", "state"):
        if name not in node:
            raise ConfigError(f"the SuperNode's --node-config lacks {name}= (data, centre "
                              "and state are needed)")
    read = {"size": int(node["size"])} if "size" in node else {}
    data = load_dataset(str(node["data"]), **read)
    state = Path(str(node["state"]))
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    scheme = scheme_params(context.run_config)
    centre = CentreHalf(get_protocol("federated"), scheme, data, key=None, budget=_budget(),
                        seed=int(context.run_config.get("seed", 0)),
                        centre=int(node["centre"]))
    centre.ledger = PrivacyLedger.load(state / "ledger.json")
    return centre, state


@client_app.query()
def join(message: Message, context: Context) -> Message:
    """The centre joins: its example count and image shape."""
    centre, _ = _centre(context)
    return Message(content=to_record(centre.start()), reply_to=message)


@client_app.train()
def train(message: Message, context: Context) -> Message:
    """One round on the centre's images; the ledger is saved before the reply leaves."""
    centre, state = _centre(context)
    answer = centre.receive(from_record(message.content, sender="processor"))
    centre.ledger.save(state / "ledger.json")
    return Message(content=to_record(answer), reply_to=message)


@client_app.evaluate()
def final(message: Message, context: Context) -> Message:
    """The final global model predicts the centre's test images; the predictions stay
    on the node (``state/predictions.npz``); the reply carries only their count."""
    import io

    from medveil.atomic import atomic_write_bytes

    centre, state = _centre(context)
    centre.receive(from_record(message.content, sender="processor"))
    buffer = io.BytesIO()
    np.savez(buffer, probabilities=centre.decoded.probabilities)
    atomic_write_bytes(state / "predictions.npz", buffer.getvalue(), force=True, check=False)
    done = medveil_messages.Message(kind="done", sender="owner", round=message.content[
        "config"]["round"], header={"predicted": len(centre.decoded)})
    return Message(content=to_record(done), reply_to=message)


# ----------------------------------------------------------------------------- aggregator
server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Wait for the centres, then rounds until the last (or a centre's decline); the
    global model is checkpointed after every round and written at the end."""
    from medveil.protocols import get_protocol

    config = context.run_config
    scheme = scheme_params(config)
    out = Path(str(config.get("out", "federated-run")))
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    aggregator = get_protocol("federated").processor_half(
        budget=_budget(), seed=int(config.get("seed", 0)), params=scheme.params)
    aggregator.checkpoint = out / "checkpoint.npz"
    if aggregator.checkpoint.exists():
        aggregator.load_checkpoint(aggregator.checkpoint)
    nodes = _wait_for_centres(grid, scheme.params["centres"])
    pending = _exchange(grid, nodes, [medveil_messages.Message(
        kind="join", sender="processor", round=0)] * len(nodes), MessageType.QUERY)
    while True:
        orders = aggregator.receive(pending)
        if all(o.kind == "final" for o in orders):
            _exchange(grid, nodes, orders, MessageType.EVALUATE)
            break
        pending = _exchange(grid, nodes, orders, MessageType.TRAIN)
    aggregator.save_checkpoint(out / "model.npz")


def _wait_for_centres(grid: Grid, centres: int) -> list[int]:
    import time

    deadline = time.monotonic() + WAIT_FOR_CENTRES_S
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= centres:
            return nodes[:centres]
        if time.monotonic() > deadline:
            raise ConfigError(f"{len(nodes)} of {centres} centres connected in "
                              f"{WAIT_FOR_CENTRES_S:.0f} s; start a SuperNode per centre")
        time.sleep(1.0)


def _exchange(grid: Grid, nodes: list[int], orders: list[medveil_messages.Message],
              message_type: str) -> list[medveil_messages.Message]:
    """Each order to its node; the replies in the nodes' order (a failed or missing
    reply stops the run: a centre that cannot train is not silently dropped)."""
    sent = [Message(content=to_record(o), dst_node_id=n, message_type=message_type)
            for o, n in zip(orders, nodes, strict=True)]
    replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(
        sent, timeout=ROUND_TIMEOUT_S)}
    answers = []
    for node in nodes:
        reply = replies.get(node)
        if reply is None or reply.has_error():
            reason = "no reply" if reply is None else reply.error.reason
            raise ConfigError(f"centre node {node} failed the {message_type} round: "
                              f"{reason}")
        answers.append(from_record(reply.content, sender="owner"))
    return answers
