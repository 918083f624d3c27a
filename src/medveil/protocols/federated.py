"""``federated``: the images stay in each centre; centres train one classifier together.

N centres (the data set dealt to them by image, ``iid`` or label-skewed) and one
aggregator run FedAvg (FedProx with ``mu``) for ``rounds`` rounds, each centre with
Opacus DP-SGD where the run asks for it (``noise`` or a target ``epsilon``). The
halves on the protocol shape:

- a **centre** (:class:`CentreHalf`, an owner half) joins with its example count and
  image shape, answers each ``train`` message (the global weights and the round's
  plan) with an ``update`` (its trained weights, example count, steps and epsilon so
  far) or declines a round that would take it past ``max_epsilon``; on ``final`` it
  predicts its own test images with the global model, at home;
- the **aggregator** (:class:`AggregatorHalf`, the processor half) checks every update,
  averages them (Flower's FedAvg / FedProx) and sends the next round, or ``final``
  after the last round or at the first decline.

What leaves a centre: model weights after each round, its example count, steps and
epsilon. The aggregator is attacked as the processor (``updates`` on the attack
surface: :mod:`medveil.attacks.update_inversion`), and the global model is asked about
membership like every row's model.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, IntegrityError
from medveil.protocols.base import (
    SCORED_SPLIT,
    AttackSurface,
    Decoded,
    OwnerHalf,
    ProcessorHalf,
    Protocol,
    TaskOutcome,
    decoded_predictions,
    register_protocol,
)
from medveil.protocols.messages import OWNER, PROCESSOR, Message

if TYPE_CHECKING:
    from medveil.attacks.membership import MembershipTarget
    from medveil.budgets import BenchBudget
    from medveil.federated.aggregator import FederatedSettings
    from medveil.keys import Key
    from medveil.timing import StageClock

#: The largest classifier a centre agrees to build from the aggregator's net config
#: (the aggregator is an adversary: a width of 10^6 would take the centre's memory).
MAX_WIDTH = 256
MAX_GROUPS = 256
CHECKPOINT_FORMAT = "medveil.federated-checkpoint/1"


def settings_of(params: dict[str, Any], budget: BenchBudget) -> FederatedSettings:
    """The run's settings from the ``federated`` scheme's parameters (public: the run's
    configuration) and the budget (rounds, batch size and width: the standard
    classifier's where the scheme names none)."""
    from medveil.federated.aggregator import FederatedSettings

    p = params
    return FederatedSettings(
        centres=p["centres"], rounds=p["rounds"] or budget.classifier.epochs,
        epochs=p["local_epochs"], lr=p["lr"], momentum=p["momentum"],
        optimizer=p["optimizer"],
        batch_size=p["batch_size"] or budget.classifier.batch_size, mu=p["mu"],
        noise=p["noise"], target_epsilon=p["epsilon"], clip=p["clip"], delta=p["delta"],
        max_epsilon=p["max_epsilon"], width=p["width"] or budget.classifier.width,
        groups=p["groups"])


def pack_weights(weights: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Weights as a message's extras (``w000``, ``w001`` ...: a bundle's file names) and
    the parameter names in order, for the header."""
    names = list(weights)
    return {f"w{i:03d}": np.ascontiguousarray(weights[n]) for i, n in enumerate(names)}, names


def unpack_weights(message: Message) -> dict[str, np.ndarray]:
    """The weights a message carries, by parameter name, checked against its header."""
    names = message.header.get("parameters")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or \
            len(set(names)) != len(names) or \
            set(message.extras) != {f"w{i:03d}" for i in range(len(names))}:
        raise IntegrityError(f"a {message.kind!r} message's weights do not match the "
                             "parameter names it lists; refuse it")
    return {n: message.extras[f"w{i:03d}"] for i, n in enumerate(names)}


def _checked_net_config(config: Any, *, channels: int, classes: int) -> dict[str, Any]:
    """The aggregator's network config, accepted only as the federated classifier this
    centre can build: its own channels and classes, group norm, bounded width."""
    allowed = {"in_channels", "num_classes", "width", "dropout", "norm", "groups"}
    if not isinstance(config, dict) or set(config) - allowed or \
            config.get("in_channels") != channels or config.get("num_classes") != classes \
            or config.get("norm") != "group" or \
            not isinstance(config.get("width"), int) or not 1 <= config["width"] <= MAX_WIDTH \
            or not isinstance(config.get("groups"), int) or \
            not 1 <= config["groups"] <= MAX_GROUPS or \
            not isinstance(config.get("dropout", 0.0), (int, float)) or \
            not 0 <= config.get("dropout", 0.0) < 1:
        raise IntegrityError("the aggregator sent a network this centre does not build "
                             f"({config!r}); refuse the round")
    return dict(config)


class CentreHalf(OwnerHalf):
    """One centre: its images, its privacy ledger; sends joins and updates."""

    def __init__(self, protocol: Protocol, scheme: Any, data: ImageSet, *, key: Key,
                 budget: BenchBudget, seed: int, clock: StageClock | None = None,
                 centre: int = 0, test_rows: np.ndarray | None = None) -> None:
        from medveil.federated.ledger import PrivacyLedger

        super().__init__(protocol, scheme, data, key=key, budget=budget, seed=seed,
                         clock=clock)
        self.centre = centre
        #: this centre's test images' positions in the whole data set's test split
        self.test_rows = test_rows
        self.train = data.split("train")
        self.ledger = PrivacyLedger()
        self.epsilons: list[float] = []  #: after each round it trained
        self.noise = 0.0
        self.declined: str | None = None
        self.steps_first_round: int | None = None
        self.figures = {"bytes_sent": 0.0, "rounds": 0.0}

    @property
    def num_classes(self) -> int:
        return max(self.data.num_classes, int(self.train.labels.max()) + 1, 2)

    def start(self) -> Message:
        return self._sent(Message(kind="join", sender=OWNER, round=0, header=self._header(
            examples=len(self.train), image_shape=list(self.data.image_shape),
            num_classes=self.num_classes, task=self.data.task)))

    def _header(self, **fields: Any) -> dict[str, Any]:
        """A centre's message header: the run's scheme record (public, as a release's)
        and protocol, and ``fields``; no data set name, no class names."""
        return {"scheme": {"name": self.scheme.name, "version": self.scheme.version,
                           "params": self.scheme.params},
                "protocol": {"name": self.protocol.name}, **fields}

    def _sent(self, message: Message) -> Message:
        self.figures["bytes_sent"] += message.nbytes
        return message

    def receive(self, message: Message | None) -> Message | None:
        if message is None or message.kind not in ("train", "final"):
            raise IntegrityError(f"centre {self.centre} got "
                                 f"{'nothing' if message is None else message.kind!r} "
                                 "from the aggregator, not a round or the final model")
        config = _checked_net_config(message.header.get("net_config"),
                                     channels=self.data.image_shape[0],
                                     classes=self.num_classes)
        if message.kind == "final":
            self._finish(config, unpack_weights(message))
            return None
        return self._sent(self._train_round(message, config))

    def _train_round(self, message: Message, config: dict[str, Any]) -> Message:
        from medveil.federated.aggregator import plan_from_config
        from medveil.federated.centre import train_locally

        plan = plan_from_config(message.header.get("plan"))
        with self.clock.stage("centre_training"):
            result = train_locally(config, unpack_weights(message), self.train, plan=plan,
                                   ledger=self.ledger, seed=self.seed, centre=self.centre)
        self.noise = result.noise
        if result.state is None:
            self.declined = result.declined
            return Message(kind="declined", sender=OWNER, round=message.round,
                           header=self._header(reason=result.declined))
        self.ledger = result.ledger
        if self.steps_first_round is None:
            self.steps_first_round = result.steps
        epsilon = self.ledger.epsilon(plan.delta) if plan.private else None
        if epsilon is not None:
            self.epsilons.append(epsilon)
        self.figures["rounds"] += 1
        extras, names = pack_weights(result.state)
        return Message(kind="update", sender=OWNER, round=message.round,
                       extras=extras, header=self._header(
                           parameters=names, examples=result.examples, steps=result.steps,
                           epsilon=epsilon, noise_multiplier=result.noise))

    def _finish(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        """The global model predicts this centre's test images, at home."""
        from medveil.tasks import predict_proba

        self.model = global_model(config, weights, image_shape=self.data.image_shape,
                                  name=self.data.name)
        if SCORED_SPLIT in self.data.split_names:
            started = time.perf_counter()
            probabilities = predict_proba(self.model, self.data.split(SCORED_SPLIT).images)
            self.decoded = decoded_predictions({"probabilities": probabilities},
                                               where=f"centre {self.centre}'s predictions")
            self.figures["predict_ms_per_image"] = \
                1000 * (time.perf_counter() - started) / max(1, len(probabilities))
        else:
            self.decoded = Decoded("classification",
                                   probabilities=np.zeros((0, self.num_classes), np.float32))


def global_model(config: dict[str, Any], weights: dict[str, np.ndarray], *,
                 image_shape: tuple[int, ...], name: str):
    """The global weights as a :class:`~medveil.tasks.TrainedModel` (eval mode)."""
    import torch

    from medveil.nets.classifier import SmallCNN
    from medveil.tasks import TrainedModel

    net = SmallCNN(**config)
    try:
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    except (RuntimeError, KeyError) as exc:
        raise IntegrityError(f"the global model does not fit the federated classifier "
                             f"({str(exc).splitlines()[0]}); refuse it") from None
    net.eval()
    return TrainedModel(task="classification", net=net, image_shape=tuple(image_shape),
                        num_classes=config["num_classes"], config={"federated": True},
                        data_name=name)


class AggregatorHalf(ProcessorHalf):
    """The aggregator: no image, no key; rounds of FedAvg over the centres' updates."""

    def __init__(self, protocol: Protocol, settings: FederatedSettings, *,
                 budget: BenchBudget, seed: int, clock: StageClock | None = None,
                 progress: bool = False) -> None:
        from medveil.federated.aggregator import Aggregator

        super().__init__(protocol, budget=budget, seed=seed, clock=clock, progress=progress)
        self.settings = settings
        self.aggregator = Aggregator(settings)
        self.round = 0
        self.net_config: dict[str, Any] | None = None
        self.weights: dict[str, np.ndarray] = {}
        self.examples: list[int] = []
        #: what the aggregator saw that an attacker of it would invert: per round
        #: (the first and the last), the weights it sent and each centre's reply
        self.observed: list[dict[str, Any]] = []
        self.epsilons: list[list[float | None]] = []
        self.stopped: str | None = None
        self.image_shape: tuple[int, ...] = ()
        #: where the run is saved after every round (None: nowhere)
        self.checkpoint: str | os.PathLike[str] | None = None
        self._started = time.perf_counter()

    def receive(self, messages: list[Message]) -> list[Message | None]:
        from medveil.federated.aggregator import plan_to_config

        if all(m.kind == "join" for m in messages):
            self._join(messages)
        else:
            self._aggregate(messages)
        if self.stopped is not None or self.round >= self.settings.rounds:
            return [self._final(m) for m in messages]
        self.round += 1
        plan = plan_to_config(self.settings.plan(self.round))
        extras, names = pack_weights(self.weights)
        return [Message(kind="train", sender=PROCESSOR, round=m.round + 1, extras=extras,
                        header=self._header("train", plan=plan, net_config=self.net_config,
                                            parameters=names))
                for m in messages]

    def _header(self, split: str, **fields: Any) -> dict[str, Any]:
        """The aggregator's message header: the protocol, the split its message is for
        (``train``: a round; ``test``: the final model the centres predict with)."""
        return {"protocol": {"name": self.protocol.name}, "split": split, **fields}

    # -- checkpoint and resume ---------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """The run after the last finished round: global weights, round, the centres'
        example counts and epsilons (each centre keeps its own ledger), atomically."""
        import io
        import json

        from medveil.atomic import atomic_write_bytes

        extras, names = pack_weights(self.weights)
        record = {"format": CHECKPOINT_FORMAT, "round": self.round, "parameters": names,
                  "net_config": self.net_config, "image_shape": list(self.image_shape),
                  "examples": self.examples, "epsilons": self.epsilons,
                  "stopped": self.stopped}
        buffer = io.BytesIO()
        np.savez(buffer, record=np.frombuffer(json.dumps(record).encode(), np.uint8),
                 **extras)
        atomic_write_bytes(path, buffer.getvalue(), force=True, check=False)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Resume from :meth:`save_checkpoint`'s file: the next round is the one after
        it (the centres must join with the same example counts)."""
        import json
        from pathlib import Path

        from medveil.federated.aggregator import check_update
        from medveil.npy import read_npz

        arrays = read_npz(Path(path), where=f"checkpoint {path}")
        try:
            record = json.loads(arrays.pop("record").tobytes())
            if record["format"] != CHECKPOINT_FORMAT:
                raise ValueError("format")
            weights = unpack_weights(Message(kind="checkpoint", sender=PROCESSOR,
                                             round=int(record["round"]), extras=arrays,
                                             header={"parameters": record["parameters"]}))
            self.round = int(record["round"])
            self.net_config = dict(record["net_config"])
            self.image_shape = tuple(int(v) for v in record["image_shape"])
            self.examples = [int(n) for n in record["examples"]]
            self.epsilons = [list(r) for r in record["epsilons"]]
            self.stopped = record["stopped"]
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{path} is not a federated checkpoint medveil wrote "
                                 f"({exc}); start the run again") from None
        global_model(self.net_config, weights, image_shape=self.image_shape,
                     name="checkpoint")  # refuses weights that are not the network's
        check_update(weights, weights, where=f"checkpoint {path}")  # finite
        self.weights = weights

    def _join(self, messages: list[Message]) -> None:
        from medveil.federated.aggregator import initial_state

        if self.round > 0:  # resumed: the same centres join again
            if [m.header.get("examples") for m in messages] != self.examples:
                raise ConfigError("the centres that joined are not the checkpoint's (their "
                                  "example counts differ); resume with the same centres")
            return
        if any(m.kind != "join" for m in messages):
            raise IntegrityError("a centre sent an update before it joined")
        shapes = {tuple(m.header.get("image_shape", ())) for m in messages}
        classes = {m.header.get("num_classes") for m in messages}
        if len(shapes) != 1 or len(classes) != 1 or \
                any(m.header.get("task") != "classification" for m in messages):
            raise ConfigError("the centres' images differ in shape or classes (or are not "
                              "for classification); read every centre's data with the same "
                              "--size and class set")
        self.examples = [_count(m.header.get("examples"), "joined with") for m in messages]
        (shape,), (num_classes,) = shapes, classes
        self.image_shape = tuple(int(v) for v in shape)
        self.net_config, self.weights = initial_state(
            self.settings, in_channels=int(shape[0]), num_classes=int(num_classes),
            seed=self.seed)

    def _aggregate(self, messages: list[Message]) -> None:
        declined = [m.header.get("reason") for m in messages if m.kind == "declined"]
        if declined:
            self.stopped = str(declined[0])
            return
        updates = []
        for i, message in enumerate(messages):
            if message.kind != "update":
                raise IntegrityError(f"centre {i} sent a {message.kind!r}, not an update")
            examples = _count(message.header.get("examples"), "sent an update for")
            if examples != self.examples[i]:
                raise IntegrityError(f"centre {i} weighted its update by {examples} images "
                                     f"after joining with {self.examples[i]}; refuse it")
            updates.append((unpack_weights(message), examples))
        if self.round == 1 or self.round == self.settings.rounds:
            self.observed.append({"round": self.round, "before": self.weights,
                                  "after": [u for u, _ in updates],
                                  "examples": [n for _, n in updates]})
        self.epsilons.append([m.header.get("epsilon") for m in messages])
        with self.clock.stage("aggregation"):
            self.weights = self.aggregator.aggregate(self.weights, updates)
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint)

    def _final(self, message: Message) -> Message:
        self.figures["train_s"] = time.perf_counter() - self._started
        if self.model is None:
            self.model = global_model(self.net_config, self.weights,
                                      image_shape=self.image_shape, name="federated")
        extras, names = pack_weights(self.weights)
        return Message(kind="final", sender=PROCESSOR, round=message.round + 1,
                       extras=extras,
                       header=self._header(SCORED_SPLIT, net_config=self.net_config,
                                           rounds_run=self.rounds_run, parameters=names))

    @property
    def rounds_run(self) -> int:
        return len(self.epsilons)



def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise IntegrityError(f"a centre {what} {value!r} images; refuse it")
    return value


@register_protocol
class FederatedProtocol(Protocol):
    name = "federated"
    summary = ("centres train one classifier together (FedAvg over Flower, Opacus DP-SGD "
               "where asked); only model updates leave a centre")
    #: a centre's images never leave it: there is no release for the command line's
    #: protect / train / predict steps (the bench runs the halves in process)

    def owner_halves(self, scheme: Any, data: ImageSet, *, key: Key, budget: BenchBudget,
                     seed: int, clock: StageClock | None = None) -> list[OwnerHalf]:
        from medveil.federated.deal import deal_to_centres

        settings = settings_of(scheme.params, budget)
        rows = deal_to_centres(data, settings.centres, split=scheme.params["split"],
                               alpha=scheme.params["alpha"], seed=seed)
        test_index = np.full(len(data), -1)
        test_index[data.splits == SCORED_SPLIT] = np.arange(
            int((data.splits == SCORED_SPLIT).sum()))
        return [CentreHalf(self, scheme, data.subset(r), key=key, budget=budget, seed=seed,
                           clock=clock, centre=c,
                           test_rows=test_index[r][data.splits[r] == SCORED_SPLIT])
                for c, r in enumerate(rows)]

    def combine(self, owners: list[OwnerHalf], data: ImageSet) -> Decoded:
        """Each centre's predictions on its own test images, in the data set's order."""
        n = int((data.splits == SCORED_SPLIT).sum())
        parts = [(o.test_rows, o.decoded.probabilities) for o in owners]
        k = max(p.shape[1] for _, p in parts)
        probabilities = np.zeros((n, k), np.float32)
        for rows, values in parts:
            probabilities[rows] = values
        return Decoded("classification", probabilities=probabilities)

    def processor_half(self, *, budget: BenchBudget, seed: int,
                       clock: StageClock | None = None, progress: bool = False,
                       params: dict[str, Any] | None = None) -> ProcessorHalf:
        if params is None:
            raise ConfigError("the federated aggregator needs the run's settings")
        return AggregatorHalf(self, settings_of(params, budget), budget=budget, seed=seed,
                              clock=clock, progress=progress)

    def run_section(self, owners: list[OwnerHalf], processor: ProcessorHalf
                    ) -> dict[str, Any]:
        """The row's federated figures: rounds, privacy spent per centre, bytes sent."""
        settings = processor.settings
        private = settings.private
        return {
            "centres": settings.centres, "rounds_planned": settings.rounds,
            "rounds_run": processor.rounds_run, "local_epochs": settings.epochs,
            "strategy": "FedProx" if settings.mu > 0 else "FedAvg", "mu": settings.mu,
            "private": private, "delta": settings.delta if private else None,
            "accountant": "rdp" if private else None,
            "noise_multiplier": [o.noise for o in owners] if private else None,
            "clip": settings.clip if private else None,
            "epsilon": [o.epsilons[-1] if o.epsilons else 0.0 for o in owners]
            if private else None,
            "epsilon_per_round": [[r[i] for r in processor.epsilons] for i in
                                  range(len(owners))] if private else None,
            "max_epsilon": settings.max_epsilon or None, "stopped": processor.stopped,
            "bytes_sent_per_centre": [o.figures["bytes_sent"] for o in owners],
            "examples_per_centre": list(processor.examples)}

    def describe(self, section: dict[str, Any], row: dict[str, Any]) -> list[str]:
        sentences = [f"{section['centres']} centres, {section['rounds_run']} of "
                     f"{section['rounds_planned']} rounds of {section['strategy']}, "
                     f"{np.mean(section['bytes_sent_per_centre']) / 1e6:.1f} MB sent per "
                     "centre; no image left a centre"]
        if section.get("private"):
            sentences.append(f"DP-SGD in each centre: epsilon "
                             f"{max(section['epsilon']):.2f} at delta {section['delta']:g} "
                             f"(the largest of the centres', {section['accountant']} "
                             f"accountant), noise multiplier "
                             f"{max(section['noise_multiplier']):.2f}, clip "
                             f"{section['clip']:g}")
        if section.get("stopped"):
            sentences.append(f"stopped early: {section['stopped']}")
        return sentences

    def attack_surface(self, outcome: TaskOutcome) -> AttackSurface:
        """No view; the aggregator's: centre 0's first-round update with that centre's
        training images (the victims), and a probe of the row's mechanism."""
        seen = update_surface(outcome) if outcome.processor.observed else None
        return AttackSurface(views=None, not_applicable=(
            "no image leaves a centre: the aggregator sees model updates (its own attacker, "
            "update inversion)"), updates=seen)

    def membership_target(self, outcome: TaskOutcome, data: ImageSet, *,
                          budget: BenchBudget, seed: int) -> MembershipTarget | str:
        """The global model on the images themselves; its references are the same
        federated training (same settings, same DP) on other images."""
        from medveil.attacks.membership import (
            MembershipTarget,
            Samples,
            candidate_splits,
            classification_scorer,
            reference_imageset,
        )
        from medveil.tasks import predict_proba

        scheme = outcome.owner.scheme

        def scorer(model):
            return classification_scorer(lambda x: predict_proba(model, x))

        def fit_reference(train: Samples, val: Samples, reference_seed: int):
            reference = reference_imageset(train, val, like=data, truth="labels")
            return scorer(train_federated(self, scheme, reference, budget=budget,
                                          seed=reference_seed))

        return MembershipTarget(
            domain="the images themselves (the global model)",
            threat="anyone the global model is shared with (every centre, the aggregator)",
            splits=candidate_splits(data, truth="labels"), score=scorer(outcome.model),
            fit_reference=fit_reference)

    # the command line's one-exchange steps do not apply: a centre keeps its images
    def release(self, scheme: Any, data: ImageSet, *, key: Key):
        raise ConfigError("the federated protocol releases no images: each centre keeps "
                          "its own and sends model updates; run it with `medveil bench "
                          "--schemes federated` (or Flower's deployment, docs/federated.md)")


def update_surface(outcome: TaskOutcome):
    """What the aggregator of ``outcome`` saw, for :mod:`medveil.attacks.aggregator`."""
    from medveil.attacks.aggregator import UpdateSurface
    from medveil.attacks.update_inversion import ObservedUpdate

    aggregator, centre = outcome.processor, outcome.owners[0]
    first = aggregator.observed[0]
    shape = tuple(aggregator.image_shape)
    settings = aggregator.settings
    observed = ObservedUpdate(net_config=aggregator.net_config, before=first["before"],
                              after=first["after"][0], image_shape=shape, n_images=1)

    def probe(images: np.ndarray, labels: np.ndarray, seed: int) -> ObservedUpdate:
        """One plain-SGD step on ``images`` alone with the row's clipping and noise."""
        from dataclasses import replace

        from medveil.data.imageset import from_splits
        from medveil.federated.centre import train_locally
        from medveil.federated.ledger import PrivacyLedger

        batch = from_splits([("train", images, labels, None)], meta={"name": "probe"})
        plan = replace(settings.plan(1), epochs=1, batch_size=len(images), lr=0.01,
                       lr_end=0.01, optimizer="sgd", momentum=0.0, mu=0.0, augment=False,
                       noise=centre.noise, target_epsilon=0.0, max_epsilon=0.0)
        result = train_locally(aggregator.net_config, first["before"], batch, plan=plan,
                               ledger=PrivacyLedger(), seed=seed, centre=0)
        return ObservedUpdate(net_config=aggregator.net_config, before=first["before"],
                              after=result.state, image_shape=shape, n_images=len(images))

    return UpdateSurface(observed=observed, victims=centre.train.images, probe=probe,
                         labels=centre.train.labels, setting={
                             "round": first["round"], "centre": 0,
                             "batch_size": settings.batch_size,
                             "local_steps": centre.steps_first_round,
                             "optimizer": settings.optimizer,
                             "noise_multiplier": centre.noise if settings.private else 0.0,
                             "clip": settings.clip if settings.private else None})


def train_federated(protocol: FederatedProtocol, scheme: Any, data: ImageSet, *,
                    budget: BenchBudget, seed: int):
    """The federated training alone (membership references): the global model."""
    from medveil.protocols.runner import run_rounds

    owners = protocol.owner_halves(scheme, data, key=None, budget=budget, seed=seed)
    processor = protocol.processor_half(budget=budget, seed=seed, params=scheme.params)
    run_rounds(owners, processor)
    return processor.model
