"""The visual figures on a bench report's picture grid, as rendered.

For a scheme whose full bench takes hours (privacy_sf on CHASE_DB1: 9,385 s), the
grid the report saved is the cheapest place to ask whether a view shows its
patient: crop the "original" and "view" panels, and score the view against its
original and against the attacker's floor (the mean of the data set's training
images, rendered at the same size). Figures: raw and affine-invariant SSIM (the
bench's ``visual``), and the correlation of band-passed images inside the eroded
field of view, against the floor's and another patient's; the annotated-structure
figure (``structure_figure``: how well a ridge detector finds the patient's vessels
from the data set's masks in the view, against the floor and the original); and actor 1's
re-identification (``visual_reidentification``): each view ranked against every image
of the data set, the true patient found by matching the grid's original. Example::

    python benchmarks/grid_visual_check.py --grid docs/img/bench-chase-psf/grid_privacy_sf.png \\
        --data ../shared/data/segmentation/chase_db1
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _spans(profile: np.ndarray, minimum: int = 100) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, on in enumerate(list(profile > 0.5) + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start > minimum:
                spans.append((start, i))
            start = None
    return spans


def main() -> None:
    from PIL import Image
    from scipy.ndimage import binary_erosion, gaussian_filter

    from medveil.attacks.suite import structure_figure, visual_reidentification
    from medveil.data import load_dataset
    from medveil.metrics import advantage, affine_fitted, image_similarity, standardized

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--data", required=True, help="the data set the bench ran on")
    parser.add_argument("--columns", default="original,view",
                        help="the 0-based names of the original and the view columns")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    picture = np.asarray(Image.open(args.grid).convert("L"), dtype=np.float32) / 255
    cols, rows = _spans((picture < 0.98).mean(0)), _spans((picture < 0.98).mean(1))
    titles = ["original", "decoded mask", "view", "best attack"][:len(cols)]
    want = args.columns.split(",")
    index = {name: titles.index(name) for name in want}

    def panel(r: int, c: int) -> np.ndarray:
        (y0, y1), (x0, x1) = rows[r], cols[c]
        crop = Image.fromarray((picture[y0 + 3:y1 - 3, x0 + 3:x1 - 3] * 255).astype(np.uint8))
        return np.asarray(crop.resize((args.size, args.size), Image.BILINEAR),
                          dtype=np.float32)[None] / 255

    originals = np.stack([panel(r, index["original"]) for r in range(len(rows))])
    views = np.stack([panel(r, index["view"]) for r in range(len(rows))])
    everything = load_dataset(args.data, size=(args.size, args.size), seed=0)
    train = everything.split("train").images
    truth = np.argmax(standardized(originals) @ standardized(everything.images).T, axis=1)
    reid = visual_reidentification(views, everything.images[truth],
                                   np.delete(everything.images, truth, axis=0))
    floor_images = np.repeat(train.mean(0, keepdims=True), len(originals), 0)
    floor = image_similarity(originals, floor_images)["ssim"]
    raw = image_similarity(originals, views)
    invariant = image_similarity(originals, affine_fitted(originals, views))
    masks = np.stack([binary_erosion(o[0] > 0.1, iterations=args.size // 9) for o in originals])

    def band(images: np.ndarray) -> np.ndarray:
        return np.stack([gaussian_filter(x[0], 1) - gaussian_filter(x[0], 4) for x in images])

    def correlation(a: np.ndarray, b: np.ndarray) -> list[float]:
        out = []
        for x, y, m in zip(a, b, masks, strict=True):
            x, y = x[m] - x[m].mean(), y[m] - y[m].mean()
            out.append(round(float(abs((x * y).sum()) / np.linalg.norm(x) / np.linalg.norm(y)), 3))
        return out

    print(json.dumps({
        "images": len(originals), "floor_ssim": floor,
        "raw": {**raw, "advantage": advantage(raw["ssim"], floor)},
        "invariant": {**invariant, "advantage": advantage(invariant["ssim"], floor)},
        "band_correlation_in_field": {
            "view": correlation(band(originals), band(views)),
            "floor": correlation(band(originals), band(floor_images)),
            "another_patient": correlation(band(originals), band(np.roll(originals, 1, 0)))},
        "structure": structure_figure(views, everything.images[truth],
                                      everything.masks[truth], train),
        "reidentify": reid,
    }, indent=1))


if __name__ == "__main__":
    main()
