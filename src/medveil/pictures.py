"""Image grids and plots written as PNG files, atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medveil.atomic import atomic_write_bytes


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _as_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> something imshow draws, and its colour map."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if image.shape[0] == 1:
        return image[0], "gray"
    return np.moveaxis(image[:3], 0, -1), None


def save_image_grid(path: str | os.PathLike[str], rows: Sequence[Sequence[np.ndarray]], *,
                    row_titles: Sequence[str] | None = None,
                    col_titles: Sequence[str] | None = None,
                    overlays: Sequence[Sequence[np.ndarray | None]] | None = None) -> Path:
    """Save a grid of (C, H, W) images; optional mask overlays drawn as red contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 1.9 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            shown, cmap = _as_display(row[c])
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if overlays is not None and overlays[r][c] is not None:
                ax.contour(overlays[r][c][0], levels=[0.5], colors="red", linewidths=0.4)
            if col_titles is not None and r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], fontsize=7)
    fig.tight_layout()
    return atomic_write_bytes(path, _figure_bytes(fig), check=False)


def save_dataset_grid(path: str | os.PathLike[str], imageset, *, per_row: int = 8,
                      max_rows: int = 3, seed: int = 0) -> Path:
    """A few sample images per split, labelled with their class, masks as contours."""
    rng = np.random.default_rng(seed)
    rows, titles, overlays = [], [], []
    for split in imageset.split_names[:max_rows]:
        idx = np.nonzero(imageset.splits == split)[0]
        pick = np.sort(rng.choice(idx, size=min(per_row, len(idx)), replace=False))
        rows.append([imageset.images[i] for i in pick])
        overlays.append([imageset.masks[i] if imageset.masks is not None else None for i in pick])
        if imageset.labels is not None:
            names = imageset.class_names
            labels = [names[imageset.labels[i]] if names else str(imageset.labels[i])
                      for i in pick]
            titles.append(f"{split}: " + " ".join(labels))
        else:
            titles.append(split)
    return save_image_grid(path, rows, row_titles=titles, overlays=overlays)
