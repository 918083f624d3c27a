"""The one shape every protocol has: an owner half and a processor half exchanging
typed messages (``medveil.protocols.messages``) over one or more rounds.

A *protocol* is how the processor's task runs for a scheme. Its **owner half**
(:class:`OwnerHalf`) holds the plaintext, the key and the fitted scheme and never
sends them: it starts with a message (the release) and answers each message of the
processor until it is done. Its **processor half** (:class:`ProcessorHalf`) holds no
key and no owner state: each round it receives one message per owner (one per
centre) and answers each. ``medveil.protocols.runner.run_task`` drives the rounds in
memory (the bench, the sweeps, ``multicentre``); the command line and the service run
the same halves' steps one command at a time, the messages written to disk between
them (``release`` -> ``protect``, ``train`` / ``predict``, ``decode``).

Most protocols are one exchange: the owner releases, the processor trains and
predicts, the owner decodes (:class:`ExchangeOwner`, :class:`ExchangeProcessor`, driven
by the protocol's step methods). A protocol with more rounds (federated training)
writes its own halves.

A scheme names its protocol (``Scheme.protocol``) and has the methods it needs
(``Protocol.scheme_needs``, checked when the scheme registers); nothing outside
``protocols/`` asks which protocol runs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError
from medveil.metrics import classification_metrics, segmentation_metrics
from medveil.protocols.messages import OWNER, PROCESSOR, Arrays, Message, to_bundle
from medveil.timing import StageClock

if TYPE_CHECKING:
    from medveil.attacks.membership import MembershipTarget
    from medveil.budgets import BenchBudget
    from medveil.keys import Key
    from medveil.store import ProtectedStore

#: Splits whose truth (labels, masks) never leaves the owner: the processor trains on
#: train (val picks the checkpoint) and only predicts on test; the owner scores.
TRUTH_WITHHELD = ("test",)
#: The split the owner scores the decoded outcome on.
SCORED_SPLIT = "test"


@dataclass
class Decoded:
    """What the owner reads from the processor's results: per-image predictions.

    Classification: ``probabilities`` (N, K) (and ``logits`` where the protocol had
    them); segmentation: binary ``masks`` (N, 1, H, W).
    """

    task: str
    probabilities: np.ndarray | None = None
    masks: np.ndarray | None = None
    logits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.probabilities if self.probabilities is not None else self.masks)

    def metrics(self, truth: ImageSet) -> dict[str, float]:
        """Accuracy / AUC / F1 / MCC or Dice / IoU against the owner's ground truth."""
        if len(truth) != len(self):
            raise DataError(f"{len(self)} predictions for {len(truth)} images of "
                            f"{truth.name}; pass the data set and split the release was made "
                            "from (same --seed and --size)")
        if self.task == "classification":
            if truth.labels is None:
                raise DataError(f"{truth.name} has no labels to score predictions against")
            return classification_metrics(self.probabilities, truth.labels)
        if truth.masks is None:
            raise DataError(f"{truth.name} has no masks to score predicted masks against")
        return segmentation_metrics(self.masks, truth.masks)


@dataclass
class AttackSurface:
    """What an attacker of each actor sees of one run, for the attack pipeline.

    ``views``: per split (``train``, ``test``), the arrays the processor (and anyone it
    leaks to) holds for each image, one row per image, in the data set's order; the
    pipeline attacks the test rows with the train rows as leaked pairs. ``None`` with a
    ``not_applicable`` reason where no image attack applies (RLWE ciphertexts).
    ``pictures``: what the report shows beside the attacks (decoded masks ...).
    """

    views: dict[str, np.ndarray] | None
    not_applicable: str | None = None
    pictures: dict[str, np.ndarray] = field(default_factory=dict)
    #: what an aggregator saw of model updates (``medveil.attacks.aggregator``
    #: ``UpdateSurface``), where the processor aggregates them; None elsewhere
    updates: Any = None


@dataclass
class TaskOutcome:
    """What :func:`~medveil.protocols.runner.run_task` returns: the owner's decoded
    predictions, the model that made them, every message in order, and the figures the
    halves measured (``owner`` / ``processor``: costs; ``section``: the protocol's own)."""

    decoded: Decoded
    model: Any
    transcript: list[Message]
    owner: OwnerHalf
    figures: dict[str, float] = field(default_factory=dict)
    section: dict[str, Any] | None = None
    #: every owner of the run (one; several centres in a multi-centre protocol)
    owners: list[OwnerHalf] = field(default_factory=list)
    processor: ProcessorHalf | None = None

    @property
    def release(self) -> Message:
        """The owner's first message."""
        return self.transcript[0]

    @property
    def rounds(self) -> int:
        return 1 + max(m.round for m in self.transcript)


class OwnerHalf(ABC):
    """The owner's side of a run: plaintext, key and fitted scheme stay here."""

    def __init__(self, protocol: Protocol, scheme: Any, data: ImageSet, *, key: Key,
                 budget: BenchBudget, seed: int, clock: StageClock | None = None) -> None:
        self.protocol, self.scheme, self.data = protocol, scheme, data
        self.key, self.budget, self.seed = key, budget, seed
        self.clock = clock or StageClock()
        self.decoded: Decoded | None = None
        #: a model the owner's side trained itself (a key holder's), if any
        self.model: Any = None
        #: costs the owner measured: protect_ms_per_image, decode_ms_per_image, ...
        self.figures: dict[str, float] = {}

    @abstractmethod
    def start(self) -> Message:
        """The first message (round 0): the release."""

    @abstractmethod
    def receive(self, message: Message | None) -> Message | None:
        """The processor's answer (None: it had none); the next message, or None when
        this owner is done (``decoded`` is then set)."""

    def section(self, *, wrong_key: Key) -> dict[str, Any] | None:
        """The protocol's own figures of this run (the row's ``protocol_section``); the
        ``wrong_key`` is the bench's attacker key for wrong-key checks."""
        return None


class ProcessorHalf(ABC):
    """The processor's side of a run: no key, no owner state; every message it gets is an
    owner's (checked), every message it returns is an answer to one."""

    def __init__(self, protocol: Protocol, *, budget: BenchBudget, seed: int,
                 clock: StageClock | None = None, progress: bool = False) -> None:
        self.protocol, self.budget, self.seed = protocol, budget, seed
        self.clock = clock or StageClock()
        self.progress = progress
        self.model: Any = None
        #: costs the processor measured: train_s, predict_ms_per_image, ...
        self.figures: dict[str, float] = {}

    @abstractmethod
    def receive(self, messages: list[Message]) -> list[Message | None]:
        """One round: a message from each owner still running, an answer (or None) to each,
        in the same order."""


class ExchangeOwner(OwnerHalf):
    """One exchange: release (the protocol's ``release``), then decode the results."""

    def start(self) -> Message:
        started = time.perf_counter()
        with self.clock.stage("protect"):
            arrays, extras, info = self.protocol.release(self.scheme, self.data, key=self.key)
        self.figures["protect_ms_per_image"] = \
            1000 * (time.perf_counter() - started) / max(1, len(self.data))
        self.release = Message(kind="release", sender=OWNER, round=0, arrays=arrays,
                               extras=extras,
                               header=release_header(self.scheme, self.data, self.protocol,
                                                     info))
        self.figures["view_bytes_per_image"] = self._view_bytes()
        return self.release

    def _view_bytes(self) -> float:
        test = self.release.arrays.get(SCORED_SPLIT, {})
        n = int((self.data.splits == SCORED_SPLIT).sum())
        return float(test["view"].nbytes / n) if "view" in test and n else 0.0

    def receive(self, message: Message | None) -> Message | None:
        if message is None:
            raise ConfigError(f"the '{self.protocol.name}' processor sent no results")
        started = time.perf_counter()
        with self.clock.stage("decode"):
            self.decoded = self.protocol.decode(self.scheme, to_bundle(message), key=self.key)
        self.figures["decode_ms_per_image"] = \
            1000 * (time.perf_counter() - started) / max(1, len(self.decoded))
        return None


class ExchangeProcessor(ProcessorHalf):
    """One exchange: train on every release (the protocol's ``train``, where it trains),
    then predict the scored split of each (``predict``): results for each owner."""

    def receive(self, messages: list[Message]) -> list[Message | None]:
        releases = [to_bundle(m) for m in messages]
        if self.protocol.trains:
            started = time.perf_counter()
            with self.clock.stage("task_training"):
                self.model = self.protocol.train(releases, budget=self.budget, seed=self.seed,
                                                 progress=self.progress)
            self.figures["train_s"] = float(getattr(self.model, "train_s", None)
                                            or time.perf_counter() - started)
        answers: list[Message | None] = []
        for message, release in zip(messages, releases, strict=True):
            if not self.protocol.answers:
                answers.append(None)
                continue
            started = time.perf_counter()
            with self.clock.stage("predict"):
                arrays, info = self.protocol.predict(self.model, release, split=SCORED_SPLIT)
            count = len(next(iter(arrays.values())))
            self.figures["predict_ms_per_image"] = \
                1000 * (time.perf_counter() - started) / max(1, count)
            answers.append(Message(kind="results", sender=PROCESSOR, round=message.round,
                                   arrays={SCORED_SPLIT: arrays},
                                   header=results_header(self.protocol, release, info,
                                                         split=SCORED_SPLIT)))
        return answers


class Protocol(ABC):
    """Base class of the protocols; one module per protocol under ``medveil.protocols``.

    The step methods (``release``, ``train``, ``predict``, ``decode``, ``recover``) are
    what the command line runs one command at a time; ``owner_half`` and
    ``processor_half`` compose them into the two halves that ``run_task`` drives.
    """

    name: ClassVar[str]
    #: One line for `medveil schemes`: where the processor's task runs.
    summary: ClassVar[str]
    #: Methods this protocol calls on its schemes beyond the ``Scheme`` interface; a
    #: scheme that lacks one cannot register under this protocol.
    scheme_needs: ClassVar[tuple[str, ...]] = ()
    #: Whether the processor trains a model on the releases (``train``).
    trains: ClassVar[bool] = True
    #: Whether the processor answers a release with results (``predict``).
    answers: ClassVar[bool] = True
    #: Test images on which the bench measures the key holder's recovery (None: all).
    recovery_images: ClassVar[int | None] = None

    # -- the halves -----------------------------------------------------------------
    def owner_half(self, scheme: Any, data: ImageSet, *, key: Key, budget: BenchBudget,
                   seed: int, clock: StageClock | None = None) -> OwnerHalf:
        return ExchangeOwner(self, scheme, data, key=key, budget=budget, seed=seed,
                             clock=clock)

    def owner_halves(self, scheme: Any, data: ImageSet, *, key: Key, budget: BenchBudget,
                     seed: int, clock: StageClock | None = None) -> list[OwnerHalf]:
        """Every owner of a run on ``data`` (one; a multi-centre protocol deals the data
        to several)."""
        return [self.owner_half(scheme, data, key=key, budget=budget, seed=seed,
                                clock=clock)]

    def combine(self, owners: list[OwnerHalf], data: ImageSet) -> Decoded:
        """The owners' decoded outcomes as one, in ``data``'s test order."""
        return owners[0].decoded

    def processor_half(self, *, budget: BenchBudget, seed: int,
                       clock: StageClock | None = None, progress: bool = False,
                       params: dict[str, Any] | None = None) -> ProcessorHalf:
        """The processor's half; ``params``: the scheme's parameters (public: the run's
        configuration, as a release's header carries them)."""
        return ExchangeProcessor(self, budget=budget, seed=seed, clock=clock,
                                 progress=progress)

    def run_section(self, owners: list[OwnerHalf], processor: ProcessorHalf
                    ) -> dict[str, Any] | None:
        """Figures of the whole run the halves measured together (a multi-centre
        protocol's), merged into the row's ``protocol_section``."""
        return None

    def attack_surface(self, outcome: TaskOutcome) -> AttackSurface:
        """What an attacker sees of ``outcome`` (default: the release's ``view`` arrays of
        train and test, one row per image)."""
        views = {s: outcome.release.arrays[s]["view"] for s in ("train", SCORED_SPLIT)
                 if s in outcome.release.arrays}
        return AttackSurface(views=views)

    def describe(self, section: dict[str, Any], row: dict[str, Any]) -> list[str]:
        """The report's sentences for this protocol's ``protocol_section`` of ``row``."""
        return []

    def membership_target(self, outcome: TaskOutcome, data: ImageSet, *,
                          budget: BenchBudget, seed: int) -> MembershipTarget | str:
        """The run's task model in its own input domain, for the membership attacks
        (:mod:`medveil.attacks.membership`), or the reason none applies."""
        return f"the '{self.name}' protocol offers no model to ask about membership"

    # -- owner ----------------------------------------------------------------------
    @abstractmethod
    def release(self, scheme: Any, data: ImageSet, *, key: Key
                ) -> tuple[Arrays, dict[str, np.ndarray], dict[str, Any]]:
        """What leaves the owner: per-split arrays, extras (no split), and a header that
        the processor needs (image shape, task); never key bytes or owner state."""

    def decode(self, scheme: Any, results: ProtectedStore, *, key: Key | None) -> Decoded:
        """The processor's results as predictions the owner can read (default: they are
        already in clear: probabilities or masks)."""
        return decoded_in_clear(results)

    def recover(self, scheme: Any, release: ProtectedStore, *, key: Key) -> ImageSet:
        """Key holders: the images back from a release (invertible schemes)."""
        from medveil.data.imageset import from_splits

        parts = []
        for split in release.split_names:
            part = release.part(split)
            images = np.clip(scheme.recover(part["view"], key=key), 0.0, 1.0).astype(np.float32)
            parts.append((split, images, part.get("labels"), part.get("masks")))
        dataset = release.manifest.get("dataset", {})
        return from_splits(parts, class_names=dataset.get("class_names"), meta={
            "name": f"{dataset.get('name', 'release')}[recovered]", "reader": "recover"})

    # -- processor ------------------------------------------------------------------
    def train(self, releases: list[ProtectedStore], *, budget: BenchBudget, seed: int,
              progress: bool = False) -> Any:
        raise ConfigError(f"the '{self.name}' protocol leaves the processor nothing to train: "
                          f"{self.summary}")

    def predict(self, model: Any, release: ProtectedStore, *, split: str
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The processor's results on ``split`` (arrays by kind) and what they describe."""
        raise ConfigError(f"the '{self.name}' protocol gives the processor nothing to run: "
                          f"{self.summary}")

    def save_model(self, model: Any, path: Any, *, force: bool = False) -> None:
        raise ConfigError(f"the '{self.name}' protocol has no processor model to save")

    def load_model(self, record: dict[str, Any], path: Any) -> Any:
        raise ConfigError(f"the '{self.name}' protocol has no processor model to load")


def release_header(scheme: Any, data: ImageSet, protocol: Protocol, info: dict[str, Any]
                   ) -> dict[str, Any]:
    """The header of a release: scheme, protocol and the data set's shape."""
    dataset = {"name": data.name, "task": data.task, "image_shape": list(data.image_shape),
               "class_names": data.class_names}
    return {"scheme": {"name": scheme.name, "version": scheme.version,
                       "params": scheme.params},
            "protocol": {"name": protocol.name, **info}, "dataset": dataset}


def results_header(protocol: Protocol, release: ProtectedStore, info: dict[str, Any], *,
                   split: str) -> dict[str, Any]:
    """The header of the processor's results on ``split`` of ``release``: the release it
    answers (its content digest) and that release's key fingerprint."""
    return {"protocol": {"name": protocol.name, **info},
            "scheme": release.manifest["scheme"], "release": release.content_id,
            "release_key_fingerprint": release.manifest.get("key_fingerprint"),
            "dataset": {k: v for k, v in release.manifest.get("dataset", {}).items()
                        if k != "name"},
            "split": split}


def decoded_predictions(predictions: dict[str, np.ndarray], *,
                        where: str = "the results") -> Decoded:
    """Predictions in clear (probabilities or masks) as the owner reads them, checked: the
    processor is an adversary, and a NaN or a mis-shaped array is refused, not written."""
    if "probabilities" in predictions:
        probs = np.asarray(predictions["probabilities"])
        if probs.ndim != 2 or probs.shape[1] < 1 or probs.dtype.kind != "f" or \
                not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1 + 1e-6:
            raise DataError(f"{where} holds probabilities shaped {probs.shape} {probs.dtype} "
                            "that are not finite per-class probabilities in [0, 1]; refuse "
                            "them and ask the processor for `medveil predict` output")
        return Decoded("classification", probabilities=probs)
    if "masks" in predictions:
        masks = np.asarray(predictions["masks"])
        if masks.ndim != 4 or masks.shape[1] != 1 or masks.dtype.kind not in "ub" or \
                (masks.size and masks.max() > 1):
            raise DataError(f"{where} holds masks shaped {masks.shape} {masks.dtype}, not "
                            "binary (N, 1, H, W) masks; ask the processor for `medveil "
                            "predict` output")
        return Decoded("segmentation", masks=masks)
    raise DataError(f"{where} holds neither probabilities nor masks; it is not a "
                    "results set of this protocol")


def decoded_in_clear(results: ProtectedStore) -> Decoded:
    """Results that are predictions already."""
    return decoded_predictions(results.part(results.manifest["split"]), where=results.label)


def protect_batched(scheme: Any, images: np.ndarray, key: Key, batch_size: int = 256
                    ) -> np.ndarray:
    """The views of ``images`` in batches (the schemes' memory stays bounded)."""
    return np.concatenate([scheme.protect(images[i:i + batch_size], key=key)
                           for i in range(0, len(images), batch_size)])


# ----------------------------------------------------------------------------- registry
PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: make a protocol available by its ``name``
    (``medveil.protocols.registry.get_protocol``)."""
    if cls.name in PROTOCOLS and type(PROTOCOLS[cls.name]) is not cls:
        raise ValueError(f"protocol name '{cls.name}' is already registered")
    PROTOCOLS[cls.name] = cls()
    return cls
