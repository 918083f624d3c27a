"""``view``: the processor trains the standard model on the views themselves.

For schemes whose views are images (plain, obfuscation, fesf, the reference
schemes). The release holds every split's views with the labels or masks of train
and val (the test split's truth stays with the owner); the processor trains the
standard classifier or U-Net on the train split (val picks the checkpoint) and
predicts on a split; its predictions are already readable, so the owner's
``decode`` only scores them. The same standard training serves the
key holder on recovered images (see ``key_holder``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import DataError, IntegrityError, ModelFileError
from medveil.protocols.base import (
    TRUTH_WITHHELD,
    Arrays,
    Protocol,
    protect_batched,
    register_protocol,
)


def concat_imagesets(parts: list[ImageSet]) -> ImageSet:
    """Several centres' data as one set (the pooled model's training data)."""
    if len(parts) == 1:
        return parts[0]
    shapes = {p.image_shape for p in parts}
    tasks = {p.task for p in parts}
    if len(shapes) > 1 or len(tasks) > 1:
        raise DataError(f"the releases differ in image shape or task ({sorted(shapes)}, "
                        f"{sorted(tasks)}); pool releases made the same way")
    def cat(field: str):
        values = [getattr(p, field) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)
    n = sum(len(p) for p in parts)
    return ImageSet(images=np.concatenate([p.images for p in parts]),
                    splits=np.concatenate([p.splits for p in parts]),
                    ids=np.array([f"row{i}" for i in range(n)]), labels=cat("labels"),
                    masks=cat("masks"), class_names=parts[0].class_names,
                    meta={"name": "+".join(p.name for p in parts), "reader": "pooled"},
                    withheld=tuple(sorted({s for p in parts for s in p.withheld})))


def train_standard(data: ImageSet, *, budget, seed: int, progress: bool = False):
    """The standard classifier or U-Net under ``budget`` (the same for every scheme)."""
    from medveil.tasks import train_model

    return train_model(data, seed=seed, classifier=budget.fresh_classifier(),
                       segmenter=budget.fresh_segmenter(), progress=progress)


def standard_membership_target(model, domain: ImageSet, *, budget, domain_name: str,
                               threat: str):
    """The membership target of a standard classifier or U-Net trained on ``domain``'s
    train split: its reference models are the same training (``train_standard``) on
    other images of the same domain."""
    from medveil.attacks.membership import (
        MembershipTarget,
        Samples,
        candidate_splits,
        classification_scorer,
        mask_scorer,
        reference_imageset,
    )
    from medveil.tasks import mask_probabilities, predict_proba

    classify = model.task == "classification"
    truth = "labels" if classify else "masks"

    def scorer(net):
        if classify:
            return classification_scorer(lambda x: predict_proba(net, x))
        return mask_scorer(lambda x: mask_probabilities(net, x))

    def fit_reference(train: Samples, val: Samples, seed: int):
        reference = reference_imageset(train, val, like=domain, truth=truth)
        return scorer(train_standard(reference, budget=budget, seed=seed))

    return MembershipTarget(domain=domain_name, threat=threat,
                            splits=candidate_splits(domain, truth=truth),
                            score=scorer(model), fit_reference=fit_reference)


def predict_standard(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Probabilities (classification) or binary masks (segmentation) for ``images``."""
    from medveil.tasks import predict_masks, predict_proba

    if model.task == "classification":
        if images.shape[1:] != tuple(model.image_shape):
            raise ModelFileError(
                f"the model was trained on {model.image_shape} images, these are "
                f"{images.shape[1:]}; use data made the same way (same --size and --color)")
        return {"probabilities": predict_proba(model, images).astype(np.float64)}
    return {"masks": predict_masks(model, images)}


@register_protocol
class ViewProtocol(Protocol):
    name = "view"
    summary = "the processor trains the standard model on the views"

    def release(self, scheme, data: ImageSet, *, key) -> tuple[Arrays, dict, dict[str, Any]]:
        arrays: Arrays = {}
        for split in data.split_names:
            part = data.split(split)
            arrays[split] = {"view": protect_batched(scheme, part.images, key)}
            if split in TRUTH_WITHHELD:
                continue  # the owner keeps the test truth and scores with `decode`
            if part.labels is not None:
                arrays[split]["labels"] = part.labels
            if part.masks is not None:
                arrays[split]["masks"] = part.masks
        return arrays, {}, {}

    def train(self, releases, *, budget, seed: int, progress: bool = False):
        data = concat_imagesets([views_as_imageset(r) for r in releases])
        return train_standard(data, budget=budget, seed=seed, progress=progress)

    def predict(self, model, release, *, split: str):
        data = views_as_imageset(release).split(split)
        return predict_standard(model, data.images), {"task": model.task}

    def membership_target(self, outcome, data, *, budget, seed: int):
        """The processor's model on views (the owner's truth of each candidate): the
        strongest outsider, who can query the model with views of the images it asks
        about (which needs the owner's key or the processor's help)."""
        from medveil.protocols.messages import to_bundle

        # train and val views carry their labels or masks in the release
        domain = views_as_imageset(to_bundle(outcome.release))
        return standard_membership_target(
            outcome.model, domain, budget=budget,
            domain_name="views",
            threat="the processor, or anyone it lets query the model, holding views of the "
                   "images asked about")

    def save_model(self, model, path, *, force: bool = False) -> None:
        model.save(path, force=force, protocol=self.name)

    def load_model(self, record: dict[str, Any], path) -> Any:
        from medveil.tasks import TrainedModel

        return TrainedModel.load(path)


def views_as_imageset(release) -> ImageSet:
    """A release's image views as an :class:`ImageSet` to train the standard model on
    (the test split's truth stays with the owner: it is ``withheld`` here). The release
    is an adversary's file until proven otherwise: views must be float32 images."""
    from medveil.data.imageset import from_splits
    from medveil.data.readers import check_labels

    parts = []
    for split, arrays in release.arrays.items():
        view = arrays.get("view")
        if view is None or view.ndim != 4 or view.dtype != np.float32:
            shape = None if view is None else (view.shape, str(view.dtype))
            raise IntegrityError(
                f"{release.label} holds '{release.scheme_name}' views {shape or '(none)'}, "
                "which are not images; this scheme's task runs another way")
        labels = arrays.get("labels")
        if labels is not None:
            labels = check_labels(labels, where=f"{release.label}: {split}.labels",
                                  count=len(view))
        parts.append((split, np.clip(view, 0.0, 1.0), labels, arrays.get("masks")))
    dataset = release.manifest.get("dataset", {})
    return from_splits(parts, class_names=dataset.get("class_names"), meta={
        "name": f"{dataset.get('name', 'store')}[{release.scheme_name}]",
        "source": release.label, "reader": "store", "scheme": release.manifest["scheme"],
        "key_fingerprint": release.manifest.get("key_fingerprint")})
