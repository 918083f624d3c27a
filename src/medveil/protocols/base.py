"""The one interface every way of running the processor's task implements.

A *protocol* is how the processor's task runs for a scheme: what the owner ships
(the release's shards), what the processor does with releases and no key
(``train``, ``predict``), what the owner or a key holder does with what comes
back (``decode``, ``recover``), and the bench row it produces. A scheme names its
protocol (``Scheme.protocol``); the command line, ``protect``, the store, the
bench and the report call the protocol and never branch on a scheme's or a
protocol's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError, unknown_name
from medveil.metrics import classification_metrics, segmentation_metrics
from medveil.timing import StageClock

if TYPE_CHECKING:
    from medveil.budgets import BenchBudget
    from medveil.keys import Key
    from medveil.store import ProtectedStore

Arrays = dict[str, dict[str, np.ndarray]]

#: Splits whose truth (labels, masks) never leaves the owner: the processor trains on
#: train (val picks the checkpoint) and only predicts on test; the owner scores.
TRUTH_WITHHELD = ("test",)


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
class BenchRun:
    """Everything a protocol's bench row needs: the fitted scheme and the run's setting."""

    spec: Any  #: the row's SchemeSpec (label, name, parameters)
    scheme: Any  #: fitted on the train split with ``key``
    row: dict[str, Any]
    data: ImageSet
    budget: BenchBudget
    seed: int
    key: Key
    wrong_key: Key
    fit_s: float
    #: the row's stage times (its ``timing``); the protocol times what it runs
    clock: StageClock = field(default_factory=StageClock)
    #: the bench's cache (``medveil.cache.BenchCache``) or None
    cache: Any = None


class Protocol(ABC):
    """Base class of the protocols; one module per protocol under ``medveil.protocols``."""

    name: ClassVar[str]
    #: One line for `medveil schemes`: where the processor's task runs.
    summary: ClassVar[str]

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

    # -- bench ----------------------------------------------------------------------
    def utility(self, scheme: Any, data: ImageSet, *, key: Key, budget: BenchBudget,
                seed: int) -> dict[str, float]:
        """The workflow in memory (release, train, predict, decode) scored on ``data``'s
        test split: the bench row's utility without the attacks (for sweeps)."""

        release = in_memory_release(self, scheme, data, key=key)
        model = self.train([release], budget=budget, seed=seed)
        arrays, _ = self.predict(model, release, split="test")
        results = in_memory_results(arrays, "test")
        return self.decode(scheme, results, key=key).metrics(data.split("test"))

    @abstractmethod
    def bench_row(self, run: BenchRun) -> dict[str, Any]:
        """One scorecard row: the workflow above on the bench's data, then the attacks."""


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


def in_memory_results(arrays: dict[str, np.ndarray], split: str) -> ProtectedStore:
    """The processor's results on ``split`` as `medveil predict` writes them, in memory."""
    from medveil.store import ProtectedStore

    return ProtectedStore.in_memory(arrays={split: arrays}, header={"split": split}, key=None)


# ----------------------------------------------------------------------------- registry
PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: make a protocol available by its ``name``."""
    if cls.name in PROTOCOLS and type(PROTOCOLS[cls.name]) is not cls:
        raise ValueError(f"protocol name '{cls.name}' is already registered")
    PROTOCOLS[cls.name] = cls()
    return cls


def get_protocol(name: str) -> Protocol:
    import medveil.protocols  # noqa: F401  (registers the built-in protocols)

    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, list(PROTOCOLS))
    return PROTOCOLS[name]


def in_memory_release(protocol: Protocol, scheme: Any, data: ImageSet, *, key: Key):
    """The release exactly as `medveil protect` writes it, kept in memory."""
    from medveil.protocols.view import release_header
    from medveil.store import ProtectedStore

    arrays, extras, info = protocol.release(scheme, data, key=key)
    return ProtectedStore.in_memory(arrays=arrays, extras=extras,
                                    header=release_header(scheme, data, protocol, info), key=key)


def protect_batched(scheme: Any, images: np.ndarray, key: Key, batch_size: int = 256
                    ) -> np.ndarray:
    """The views of ``images`` in batches (the schemes' memory stays bounded)."""
    return np.concatenate([scheme.protect(images[i:i + batch_size], key=key)
                           for i in range(0, len(images), batch_size)])
