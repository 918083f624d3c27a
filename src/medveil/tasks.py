"""Training and evaluation of the classifier and the segmenter on an ImageSet.

The same code scores the plaintext baseline and every image-shaped view, so a
scorecard row differs only by what the scheme did to the pixels. Runs are
deterministic from ``seed``: weight initialisation, shuffling, augmentation and
dropout draw from a forked torch RNG, so the caller's global state is untouched.
"""

from __future__ import annotations

import copy
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medveil import __version__
from medveil.atomic import atomic_write_bytes
from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError, ModelFileError
from medveil.metrics import classification_metrics, segmentation_metrics
from medveil.model_file import MODEL_FORMAT, read_model_record
from medveil.progress import progress_bar
from medveil.seeds import seeded


@dataclass
class ClassifierConfig:
    """Budget and optimiser of the standard classifier (the same for every scheme)."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 16
    augment: bool = True
    class_weighted: bool = True
    #: Knowledge distillation (Hinton et al. 2015) from a teacher, when one is given:
    #: the loss is ``(1 - w) * CE + w * T^2 * KL(teacher_T || student_T)``.
    distill_weight: float = 0.5
    distill_temperature: float = 4.0


@dataclass
class SegmenterConfig:
    """Budget and optimiser of the standard U-Net (the same for every scheme)."""

    steps: int = 1500
    batch_size: int = 8
    patch: int = 128
    lr: float = 2e-3
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    eval_every: int = 250


@dataclass
class TrainedModel:
    """A trained network with what is needed to use and describe it."""

    task: str
    net: Any
    image_shape: tuple[int, ...]
    num_classes: int
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    train_s: float = 0.0
    data_name: str = ""
    key_fingerprint: str | None = None

    def save(self, path: str | os.PathLike[str], *, force: bool = False,
             protocol: str | None = None) -> Path:
        """Atomically write weights and metadata (no key material, no pickled code);
        ``protocol``: the protocol whose processor trained it (``predict`` checks it)."""
        import torch

        record = {
            "format": MODEL_FORMAT, "medveil_version": __version__, "task": self.task,
            "image_shape": list(self.image_shape), "num_classes": self.num_classes,
            "config": self.config, "net_config": self.net.config, "history": self.history,
            "train_s": self.train_s, "data_name": self.data_name,
            "key_fingerprint": self.key_fingerprint, "protocol": protocol,
            "state_dict": self.net.state_dict(),
        }
        buffer = io.BytesIO()
        torch.save(record, buffer)
        return atomic_write_bytes(path, buffer.getvalue(), force=force)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainedModel:
        """A model file, every field checked: an edited record is a clear error, never a
        traceback from the network's constructor."""
        record = read_model_record(path)
        try:
            net_config = record["net_config"]
            if not isinstance(net_config, dict) or record["task"] not in (
                    "classification", "segmentation"):
                raise TypeError("net_config / task")
            if record["task"] == "classification":
                from medveil.nets.classifier import SmallCNN

                net = SmallCNN(**net_config)
            else:
                from medveil.nets.segmenter import build_unet

                net = build_unet(**{**net_config, "channels": tuple(net_config["channels"])})
            net.load_state_dict(record["state_dict"])
            net.eval()
            return cls(task=record["task"], net=net,
                       image_shape=tuple(int(v) for v in record["image_shape"]),
                       num_classes=int(record["num_classes"]), config=dict(record["config"]),
                       history=record["history"], train_s=float(record["train_s"]),
                       data_name=str(record["data_name"]),
                       key_fingerprint=record["key_fingerprint"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError,
                OverflowError) as exc:
            raise ModelFileError(f"{path} is not a complete model file of this version "
                                 f"({type(exc).__name__}: it was edited or truncated); train "
                                 "it again") from None


# ----------------------------------------------------------------------------- helpers
def random_shift(batch, pad: int, gen):
    """Reflect-pad and randomly crop back: small translations, drawn from ``gen``."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (torch.arange(h)[None, :] + dy[:, None])  # (n, h)
    cols = (torch.arange(w)[None, :] + dx[:, None])  # (n, w)
    idx_n = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def _check_task(data: ImageSet, task: str) -> None:
    if data.task != task:
        raise DataError(f"{data.name} is a {data.task} data set; this needs {task} data "
                        f"({'labels' if task == 'classification' else 'masks'})")


# ----------------------------------------------------------------------------- classifier
def predict_proba(model: TrainedModel, images: np.ndarray, *, batch_size: int = 256
                  ) -> np.ndarray:
    import torch

    _check_shape(model, images)
    model.net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            logits = model.net(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])))
            out.append(torch.softmax(logits, dim=1).numpy())
    probs = np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)
    _check_finite(probs, "probabilities")
    return probs


def _check_finite(values: np.ndarray, what: str) -> None:
    """A model whose output is NaN or infinite is broken: refuse it, never score it."""
    bad = int((~np.isfinite(values)).reshape(len(values), -1).any(axis=1).sum()) \
        if len(values) else 0
    if bad:
        raise ModelFileError(f"the model outputs non-finite {what} (NaN or inf) for {bad} of "
                             f"{len(values)} images: its weights are broken; train it again")


def _check_shape(model: TrainedModel, images: np.ndarray) -> None:
    if tuple(images.shape[1:2]) != tuple(model.image_shape[:1]):
        raise ModelFileError(
            f"the model was trained on {model.image_shape[0]}-channel images, these have "
            f"{images.shape[1]}; read the data with the same colour mode"
        )


def train_classifier(train: ImageSet, *, val: ImageSet | None = None,
                     config: ClassifierConfig | None = None, seed: int = 0,
                     progress: bool = False, build_net: Any = None,
                     teacher: TrainedModel | None = None) -> TrainedModel:
    """Train the standard classifier; keep the epoch with the best validation AUC.

    Args:
        build_net: optional ``(in_channels, num_classes) -> nn.Module``; schemes that
            need a network of their own shape (the HE-friendly CNN of ``ckks``) use the
            same loop, budget and model selection as everyone else through it.
        teacher: a trained classifier whose softened outputs on the same augmented
            batches the network also learns (``config.distill_*``): a constrained
            network (square activations) learns more from them than from labels alone.
    """
    import torch
    from torch import nn

    from medveil.nets.classifier import SmallCNN

    config = config or ClassifierConfig()
    _check_task(train, "classification")
    if config.epochs < 1:
        raise ConfigError("epochs must be at least 1")
    num_classes = max(train.num_classes, int(train.labels.max()) + 1, 2)
    x = torch.from_numpy(train.images)
    y = torch.from_numpy(train.labels)
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    with seeded(seed, "tasks/classifier") as gen:
        if build_net is None:
            net = SmallCNN(in_channels=train.image_shape[0], num_classes=num_classes,
                           width=config.width)
        else:
            net = build_net(train.image_shape[0], num_classes)
        counts = torch.bincount(y, minlength=num_classes).float().clamp(min=1)
        weight = (counts.sum() / (num_classes * counts)) if config.class_weighted else None
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
        steps_per_epoch = max(1, -(-len(x) // config.batch_size))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
        model = TrainedModel(task="classification", net=net, image_shape=train.image_shape,
                             num_classes=num_classes, config=config.__dict__.copy(),
                             data_name=train.name,
                             key_fingerprint=train.meta.get("key_fingerprint"))
        best_score, best_state = -np.inf, None
        pad = max(1, train.image_shape[1] // 16)
        with progress_bar(progress) as bar:
            task = bar.add_task("train classifier", total=config.epochs)
            for epoch in range(config.epochs):
                net.train()
                order = torch.randperm(len(x), generator=gen)
                total = 0.0
                for i in range(steps_per_epoch):
                    idx = order[i * config.batch_size:(i + 1) * config.batch_size]
                    batch = x[idx]
                    if config.augment:
                        batch = random_shift(batch, pad, gen)
                    logits = net(batch)
                    loss = loss_fn(logits, y[idx])
                    if teacher is not None:
                        loss = (1 - config.distill_weight) * loss + config.distill_weight * \
                            _distillation(logits, teacher.net, batch, config.distill_temperature)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    total += float(loss.detach()) * len(idx)
                record = {"epoch": epoch + 1, "loss": total / len(x)}
                if val is not None and len(val):
                    metrics = classification_metrics(predict_proba(model, val.images), val.labels)
                    record.update({f"val_{k}": v for k, v in metrics.items()})
                    score = metrics["auc"]
                else:
                    score = epoch  # no validation: keep the last epoch
                if score >= best_score:
                    best_score, best_state = score, copy.deepcopy(net.state_dict())
                history.append(record)
                bar.update(task, advance=1, description=f"train classifier "
                           f"loss {record['loss']:.3f}")
        net.load_state_dict(best_state)
        net.eval()
    model.history = history
    model.train_s = time.perf_counter() - started
    return model


def _distillation(logits, teacher_net, batch, temperature: float):
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    teacher_net.eval()
    with torch.no_grad():
        target = F.softmax(teacher_net(batch) / temperature, dim=1)
    return F.kl_div(F.log_softmax(logits / temperature, dim=1), target,
                    reduction="batchmean") * temperature ** 2


def evaluate_classifier(model: TrainedModel, test: ImageSet) -> dict[str, float]:
    """Accuracy, AUC, F1, MCC on ``test``."""
    _check_task(test, "classification")
    return classification_metrics(predict_proba(model, test.images), test.labels)


# ----------------------------------------------------------------------------- segmenter
def mask_probabilities(model: TrainedModel, images: np.ndarray) -> np.ndarray:
    """Per-pixel foreground probabilities (N, 1, H, W) by sliding-window inference over
    whole images (the membership attacks score a mask by them)."""
    import torch
    from monai.inferers import sliding_window_inference

    _check_shape(model, images)
    patch = int(model.config["patch"])
    h, w = images.shape[-2:]
    roi = (min(patch, h), min(patch, w))
    model.net.eval()
    out = []
    with torch.no_grad():
        for i in range(len(images)):
            logits = sliding_window_inference(torch.from_numpy(images[i:i + 1]), roi_size=roi,
                                              sw_batch_size=16, predictor=model.net,
                                              overlap=0.25, mode="gaussian")
            _check_finite(logits.numpy(), "mask logits")
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, h, w), np.float32)


def predict_masks(model: TrainedModel, images: np.ndarray) -> np.ndarray:
    """Binary masks: foreground where :func:`mask_probabilities` is above one half."""
    return (mask_probabilities(model, images) > 0.5).astype(np.uint8)


def sample_patches(images, masks, patch: int, batch: int, gen):
    """Random aligned image/mask crops with random flips (the U-Net's and privacy_sf's
    client training batches); ``gen`` is a torch.Generator."""
    import torch

    n, _, h, w = images.shape
    ph, pw = min(patch, h), min(patch, w)
    which = torch.randint(0, n, (batch,), generator=gen)
    ys = torch.randint(0, h - ph + 1, (batch,), generator=gen)
    xs = torch.randint(0, w - pw + 1, (batch,), generator=gen)
    flips = torch.rand((batch, 2), generator=gen) < 0.5
    xb, yb = [], []
    for k in range(batch):
        a = images[which[k], :, ys[k]:ys[k] + ph, xs[k]:xs[k] + pw]
        b = masks[which[k], :, ys[k]:ys[k] + ph, xs[k]:xs[k] + pw]
        for axis, flip in ((-1, flips[k, 0]), (-2, flips[k, 1])):
            if flip:
                a, b = a.flip(axis), b.flip(axis)
        xb.append(a)
        yb.append(b)
    return torch.stack(xb), torch.stack(yb)


def train_segmenter(train: ImageSet, *, val: ImageSet | None = None,
                    config: SegmenterConfig | None = None, seed: int = 0,
                    progress: bool = False) -> TrainedModel:
    """Train the U-Net on random patches; keep the checkpoint with the best validation Dice."""
    import torch
    from monai.losses import DiceCELoss

    from medveil.nets.segmenter import build_unet

    config = config or SegmenterConfig()
    _check_task(train, "segmentation")
    if config.steps < 1:
        raise ConfigError("steps must be at least 1")
    images = torch.from_numpy(train.images)
    masks = torch.from_numpy(train.masks.astype(np.float32))
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    with seeded(seed, "tasks/segmenter") as gen:
        net = build_unet(in_channels=train.image_shape[0], channels=config.channels,
                         num_res_units=config.num_res_units)
        loss_fn = DiceCELoss(sigmoid=True)
        optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr,
                                                       total_steps=config.steps)
        cfg = config.__dict__.copy()
        cfg["channels"] = list(config.channels)
        model = TrainedModel(task="segmentation", net=net, image_shape=train.image_shape,
                             num_classes=1, config=cfg, data_name=train.name,
                             key_fingerprint=train.meta.get("key_fingerprint"))
        best_score, best_state = -np.inf, None
        running = 0.0
        with progress_bar(progress) as bar:
            task = bar.add_task("train U-Net", total=config.steps)
            for step in range(1, config.steps + 1):
                net.train()
                xb, yb = sample_patches(images, masks, config.patch, config.batch_size, gen)
                loss = loss_fn(net(xb), yb)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                running += float(loss.detach())
                if step % config.eval_every == 0 or step == config.steps:
                    record = {"step": step, "loss": running / (config.eval_every
                                                              if step % config.eval_every == 0
                                                              else step % config.eval_every)}
                    running = 0.0
                    if val is not None and len(val):
                        metrics = segmentation_metrics(predict_masks(model, val.images), val.masks)
                        record.update({f"val_{k}": v for k, v in metrics.items()})
                        score = metrics["dice"]
                    else:
                        score = step
                    if score >= best_score:
                        best_score, best_state = score, copy.deepcopy(net.state_dict())
                    history.append(record)
                shown = float(loss.detach())
                bar.update(task, advance=1, description=f"train U-Net loss {shown:.3f}")
        net.load_state_dict(best_state)
        net.eval()
    model.history = history
    model.train_s = time.perf_counter() - started
    return model


def evaluate_segmenter(model: TrainedModel, test: ImageSet) -> dict[str, float]:
    """Dice and IoU on ``test``."""
    _check_task(test, "segmentation")
    return segmentation_metrics(predict_masks(model, test.images), test.masks)


# ----------------------------------------------------------------------------- dispatch
def train_model(data: ImageSet, *, seed: int = 0, progress: bool = False,
                epochs: int | None = None, steps: int | None = None,
                classifier: ClassifierConfig | None = None,
                segmenter: SegmenterConfig | None = None) -> TrainedModel:
    """Train the standard model for the data's task on its train split (val for selection)."""
    val = data.split("val") if "val" in data.split_names else None
    train = data.split("train")
    if data.task == "classification":
        config = classifier or ClassifierConfig()
        if epochs is not None:
            config.epochs = epochs
        return train_classifier(train, val=val, config=config, seed=seed, progress=progress)
    if data.task == "segmentation":
        config = segmenter or SegmenterConfig()
        if steps is not None:
            config.steps = steps
        config.eval_every = min(config.eval_every, config.steps)
        return train_segmenter(train, val=val, config=config, seed=seed, progress=progress)
    raise DataError(f"{data.name} has neither labels nor masks, so there is nothing to train")


def evaluate_model(model: TrainedModel, data: ImageSet, *, split: str = "test"
                   ) -> dict[str, float]:
    part = data.split(split)
    if (part.labels if model.task == "classification" else part.masks) is None:
        truth = "labels" if model.task == "classification" else "masks"
        raise DataError(f"{data.name} has no {truth} on its '{split}' split to score against "
                        "(a release's test truth stays with the owner: the owner scores with "
                        "`medveil decode --data`)")
    if part.image_shape[1:] != tuple(model.image_shape[1:]) and model.task == "classification":
        raise ModelFileError(
            f"the model was trained on {model.image_shape[1]}x{model.image_shape[2]} images, "
            f"these are {part.image_shape[1]}x{part.image_shape[2]}; pass --size"
        )
    if model.task == "classification":
        return evaluate_classifier(model, part)
    return evaluate_segmenter(model, part)
