"""The one in-memory form every reader produces and every task consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medveil.errors import DataError

SPLIT_ORDER = ("train", "val", "test")


@dataclass
class ImageSet:
    """Images of one data set, all splits together.

    Attributes:
        images: float32 in [0, 1], shaped (N, C, H, W).
        splits: the split name of each row ("train", "val", "test").
        ids: a stable identifier per row (file name, npz index, slice number).
        labels: int64 class per row for classification, else None.
        masks: uint8 {0, 1} shaped (N, 1, H, W) for segmentation, else None.
        class_names: names of the label values, where known.
        meta: where the data came from and how it was read (source, reader, options).
        withheld: splits whose truth is not known here (a release's or a recovered set's
            test split: its labels and masks stay with the owner). Their rows hold
            placeholder labels / masks internally; ``split(name)`` of such a split has
            none, so no metric or training can use a placeholder.
    """

    images: np.ndarray
    splits: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    withheld: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        n = len(self.images)
        if self.images.ndim != 4:
            raise DataError(f"images must be shaped (N, C, H, W), got {self.images.shape}")
        if self.images.dtype != np.float32:
            self.images = self.images.astype(np.float32)
        if not np.isfinite(self.images).all():
            bad = np.unique(np.nonzero(~np.isfinite(self.images))[0])
            names = ", ".join(str(self.ids[i]) for i in bad[:3]) if len(self.ids) else ""
            raise DataError(
                f"{len(bad)} image(s) contain NaN or infinite pixels (e.g. {names}) in "
                f"{self.meta.get('source', 'the data')}; clean or drop those images"
            )
        self.splits = np.asarray(self.splits).astype(str)
        self.withheld = tuple(s for s in self.withheld if s in set(self.splits.tolist()))
        self.ids = np.asarray(self.ids).astype(str)
        if len(self.splits) != n or len(self.ids) != n:
            raise DataError("splits and ids must have one entry per image")
        if self.labels is not None:
            self.labels = np.asarray(self.labels).reshape(-1).astype(np.int64)
            if len(self.labels) != n:
                raise DataError(f"{len(self.labels)} labels for {n} images")
        if self.masks is not None:
            self.masks = np.asarray(self.masks)
            if self.masks.shape != (n, 1, *self.images.shape[2:]):
                raise DataError(
                    f"masks shaped {self.masks.shape} do not match images {self.images.shape}; "
                    "each mask must have its image's height and width"
                )
            self.masks = (self.masks > 0).astype(np.uint8)

    # -- facts --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    @property
    def task(self) -> str:
        """"segmentation" when masks are present, "classification" when labels are, else "none"."""
        if self.masks is not None:
            return "segmentation"
        if self.labels is not None:
            return "classification"
        return "none"

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "data"))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def split_names(self) -> list[str]:
        present = set(self.splits.tolist())
        ordered = [s for s in SPLIT_ORDER if s in present]
        return ordered + sorted(present - set(ordered))

    @property
    def num_classes(self) -> int:
        if self.labels is None:
            return 0
        if self.class_names:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    # -- selection ----------------------------------------------------------------
    def subset(self, index: np.ndarray) -> ImageSet:
        index = np.asarray(index)
        splits = set(self.splits[index].tolist())
        withheld = tuple(s for s in self.withheld if s in splits)
        no_truth = bool(splits) and splits <= set(withheld)
        return ImageSet(
            images=self.images[index],
            splits=self.splits[index],
            ids=self.ids[index],
            labels=None if self.labels is None or no_truth else self.labels[index],
            masks=None if self.masks is None or no_truth else self.masks[index],
            class_names=self.class_names,
            meta=dict(self.meta),
            withheld=() if no_truth else withheld,
        )

    def split(self, name: str) -> ImageSet:
        """Rows of one split; an unknown split is a clear error."""
        index = np.nonzero(self.splits == name)[0]
        if len(index) == 0:
            raise DataError(
                f"{self.name} has no '{name}' split (it has: {', '.join(self.split_names)})"
            )
        return self.subset(index)

    def splits_subset(self, names: tuple[str, ...]) -> ImageSet:
        """Rows of the named splits that are present; the first one must be (a clear error)."""
        self.split(names[0])
        return self.subset(np.nonzero(np.isin(self.splits, list(names)))[0])

    def head(self, n: int, *, seed: int = 0) -> ImageSet:
        """A seeded random subset of at most ``n`` rows per split, for quick runs."""
        rng = np.random.default_rng(seed)
        keep: list[np.ndarray] = []
        for split in self.split_names:
            idx = np.nonzero(self.splits == split)[0]
            if len(idx) > n:
                idx = np.sort(rng.choice(idx, size=n, replace=False))
            keep.append(idx)
        return self.subset(np.concatenate(keep))

    def describe(self) -> dict[str, Any]:
        """Counts per split and class, size and value range, for `medveil data show`."""
        info: dict[str, Any] = {
            "name": self.name,
            "source": self.meta.get("source"),
            "reader": self.meta.get("reader"),
            "task": self.task,
            "n": len(self),
            "image_shape": list(self.image_shape),
            "value_range": [float(self.images.min()), float(self.images.max())]
            if len(self) else [0.0, 0.0],
            "splits": {},
        }
        for split in self.split_names:
            part = self.splits == split
            entry: dict[str, Any] = {"n": int(part.sum())}
            if split in self.withheld:
                entry["classes"] = "truth withheld (stays with the owner)"
            elif self.labels is not None:
                values, counts = np.unique(self.labels[part], return_counts=True)
                names = self.class_names or [str(v) for v in range(int(values.max()) + 1)]
                entry["classes"] = {
                    (names[v] if v < len(names) else str(v)): int(c)
                    for v, c in zip(values, counts, strict=True)
                }
            if self.masks is not None and split not in self.withheld:
                entry["foreground_fraction"] = float(self.masks[part].mean())
            info["splits"][split] = entry
        return info


def from_splits(parts: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]], *,
                class_names: list[str] | None = None, meta: dict[str, Any] | None = None
                ) -> ImageSet:
    """One set from per-split ``(name, images, labels or None, masks or None)``.

    A split that lacks the truth the others carry (a release's test split) is
    ``withheld``: its rows get placeholders that :meth:`ImageSet.split` never shows.
    """
    have_labels = any(p[2] is not None for p in parts)
    have_masks = any(p[3] is not None for p in parts)
    withheld = tuple(name for name, _, labels, masks in parts
                     if (have_labels and labels is None) or (have_masks and masks is None))
    images = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([
        p[2] if p[2] is not None else np.zeros(len(p[1]), np.int64) for p in parts
    ]) if have_labels else None
    masks = np.concatenate([
        p[3] if p[3] is not None else np.zeros((len(p[1]), 1, *p[1].shape[2:]), np.uint8)
        for p in parts]) if have_masks else None
    return ImageSet(images=images, splits=np.concatenate([np.full(len(p[1]), p[0])
                                                          for p in parts]),
                    ids=np.array([f"row{i}" for i in range(len(images))]), labels=labels,
                    masks=masks, class_names=class_names, meta=dict(meta or {}),
                    withheld=withheld)
