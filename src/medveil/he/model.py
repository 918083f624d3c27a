"""The model owner's side: train an HE-friendly CNN in plaintext, fold it, plan its packing.

An :class:`HEModel` file holds the folded weights and the packing choice only:
no key material (the CKKS keys come from the owner's medveil key), so it can be
given to the processor in the plain-model mode.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_write_bytes
from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError, ModelFileError
from medveil.he.ckks import CKKSParameters
from medveil.he.nets import FoldedNet, arch_spec, build_he_net, fold_network
from medveil.he.packing import PackedPlan, plan_network

HE_MODEL_FORMAT = "medveil.he-model/2"
_READABLE_FORMATS = ("medveil.he-model/1", HE_MODEL_FORMAT)  # /1: no middle layers
_ARRAYS = ("first_weight", "first_bias", "hidden_weight", "hidden_bias", "final_weight",
           "final_bias")


def default_architecture(image_size: int) -> str:
    """The tutorial network up to 32 px (its reference size is 28); ``wide_pool`` above
    where the size is a multiple of 16 (64 and 128 px chest X-rays); ``deep`` otherwise.

    ``wide_pool`` (7 levels, N = 16384) trained for 30 epochs with distillation comes
    within about 0.01 AUC of the standard classifier on the 64 px chest X-rays (``deep``:
    0.05 below; docs/benchmarks.md, issue 19); ``deep`` (5 levels, N = 8192) serves the
    sizes ``wide_pool`` cannot take.
    """
    if image_size <= 32:
        return "tutorial"
    return "wide_pool" if image_size % 16 == 0 else "deep"


#: The teacher's epochs by image side (``teacher_epochs="auto"``): the standard
#: classifier's own budget (``ClassifierConfig().epochs``, 15) up to 64 px; 25 above,
#: where 15 leaves the standard classifier short (128 px chest X-rays, seed 0: AUC
#: 0.9498 at 15 epochs, 0.9616 at 25; docs/benchmarks.md, issue 19).
LARGE_IMAGE_TEACHER_EPOCHS = 25


def checked_teacher_epochs(value: Any) -> int | str:
    """``"auto"`` or a positive whole number of epochs (``"25"`` read as 25), else a
    ConfigError: the scheme's parameter and :func:`train_he_model` check it alike."""
    if value == "auto":
        return value
    try:
        epochs = int(value) if not isinstance(value, bool) and float(value) == int(value) else 0
    except (TypeError, ValueError):
        epochs = 0
    if epochs < 1:
        raise ConfigError(f"teacher_epochs must be auto or a positive whole number of epochs "
                          f"(the standard classifier's, when distill is on), got {value!r}")
    return epochs


def default_teacher_epochs(image_size: int) -> int:
    """The teacher's epochs for ``teacher_epochs="auto"`` (see ``LARGE_IMAGE_TEACHER_EPOCHS``)."""
    from medveil.tasks import ClassifierConfig

    return ClassifierConfig().epochs if image_size <= 64 else LARGE_IMAGE_TEACHER_EPOCHS


@dataclass
class HEModel:
    """A folded network plus its single-image packing."""

    net: FoldedNet
    channels_per_segment: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: Slots of named CKKS parameters; None: those the network's depth needs.
    slots: int | None = None
    _plan: PackedPlan | None = field(default=None, repr=False)

    @property
    def he_params(self) -> CKKSParameters:
        """The CKKS parameters the network's depth needs (the smallest N that fits)."""
        return CKKSParameters.for_depth(self.net.depth)

    @property
    def plan(self) -> PackedPlan:
        if self._plan is None:
            self._plan = plan_network(self.net, slots=self.slots or self.he_params.slots,
                                      channels_per_segment=self.channels_per_segment)
        return self._plan

    @property
    def image_size(self) -> int:
        return self.net.image_size

    def check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float64)
        if images.ndim == 4 and images.shape[1] == 1:
            images = images[:, 0]
        if images.ndim != 3 or images.shape[1:] != (self.image_size, self.image_size):
            raise DataError(f"this HE model takes 1x{self.image_size}x{self.image_size} images, "
                            f"got {images.shape}; load the data with --size {self.image_size} "
                            "--color gray")
        return images

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = {"format": HE_MODEL_FORMAT, "image_size": self.net.image_size,
                "stride": self.net.stride, "output_scale": self.net.output_scale,
                "net_meta": self.net.meta, "channels_per_segment": self.channels_per_segment,
                "info": self.info, "middle_layers": len(self.net.middle), "slots": self.slots}
        middle = {}
        for i, (weight, bias) in enumerate(self.net.middle):
            middle[f"middle_weight_{i}"], middle[f"middle_bias_{i}"] = weight, bias
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 **{name: getattr(self.net, name) for name in _ARRAYS}, **middle)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "model") -> HEModel:
        try:
            arrays = np.load(io.BytesIO(data), allow_pickle=False)
            meta = json.loads(arrays["meta"].tobytes())
            if meta.get("format") not in _READABLE_FORMATS:
                raise ValueError(meta.get("format"))
            middle = [(arrays[f"middle_weight_{i}"], arrays[f"middle_bias_{i}"])
                      for i in range(int(meta.get("middle_layers", 0)))]
            net = FoldedNet(image_size=int(meta["image_size"]), stride=int(meta["stride"]),
                            output_scale=float(meta["output_scale"]), meta=meta["net_meta"],
                            middle=middle, **{name: arrays[name] for name in _ARRAYS})
        except Exception as exc:
            raise ModelFileError(f"{source} is not a medveil HE model file "
                                 f"({type(exc).__name__}); make one with `medveil protect "
                                 "--scheme ckks --state STATE`") from exc
        return cls(net, meta.get("channels_per_segment"), meta.get("info", {}),
                   meta.get("slots", 4096 if meta["format"].endswith("/1") else None))

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        return atomic_write_bytes(path, self.to_bytes(), force=force)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HEModel:
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"HE model file {path} does not exist; make one with "
                                 "`medveil protect --scheme ckks --state STATE`")
        return cls.from_bytes(path.read_bytes(), source=str(path))


def train_he_model(data: ImageSet, *, architecture: str = "auto", epochs: int = 30,
                   seed: int = 0, channels_per_segment: int | None = None,
                   slots: int | None = None, distill: bool = True,
                   distill_weight: float = 0.8, teacher_epochs: int | str = "auto",
                   progress: bool = False) -> tuple[HEModel, Any]:
    """Train (standard loop and budget), fold and plan; returns the model and the torch net.

    Args:
        distill: first train the standard classifier (the standard loop, its own
            configuration, ``teacher_epochs`` long, on the same data) and let the HE network
            learn its softened outputs too: square activations learn more from a
            teacher than from labels alone. ``epochs`` is the HE network's.
        distill_weight: the teacher's share of the loss (``ClassifierConfig.distill_weight``;
            0.8 here: on the 64 px chest X-rays it beat 0.5 at the same seeds,
            docs/benchmarks.md).
        teacher_epochs: the teacher's epochs; ``"auto"``: ``default_teacher_epochs``
            of the image side (the standard budget up to 64 px, longer above).
    """
    from medveil.tasks import ClassifierConfig, train_classifier

    if data.task != "classification":
        raise ConfigError("the ckks scheme runs classifiers; this dataset has no class labels")
    c, h, w = data.image_shape
    if h != w:
        raise DataError(f"the HE networks take square images, got {h}x{w}; load with --size")
    if architecture == "auto":
        architecture = default_architecture(h)
    spec = arch_spec(architecture, h)
    train = data.split("train")
    val = data.split("val") if "val" in data.split_names else None
    started = time.perf_counter()
    config = ClassifierConfig(epochs=epochs, distill_weight=distill_weight)
    teacher_epochs = checked_teacher_epochs(teacher_epochs)
    if teacher_epochs == "auto":
        teacher_epochs = default_teacher_epochs(h)
    teacher = train_classifier(train, val=val, config=ClassifierConfig(epochs=teacher_epochs),
                               seed=seed, progress=progress) if distill else None
    trained = train_classifier(train, val=val, config=config, seed=seed, progress=progress,
                               build_net=lambda cin, k: build_he_net(spec, cin, k),
                               teacher=teacher)
    folded = fold_network(trained.net, spec, calibration=train.images[:, 0])
    scores = [record.get("val_auc", float("-inf")) for record in trained.history]
    selection = {"selected_on": "val_auc", "selected_epoch": len(scores) - int(
        np.argmax(scores[::-1])), "val_auc": max(scores)} if val is not None else {
        "selected_on": "last_epoch", "selected_epoch": len(scores)}
    model = HEModel(folded, channels_per_segment,
                    {"architecture": architecture, "train_s": time.perf_counter() - started,
                     "epochs": epochs, "data": data.name, "distilled": distill,
                     **({"distill_weight": distill_weight, "teacher_epochs": teacher_epochs}
                        if distill else {}), **selection},
                    slots)
    model.plan  # noqa: B018 - fail early if the network does not fit the slots
    return model, trained
