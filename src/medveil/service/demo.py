"""The wire, end to end, on the bundled chest X-rays (``make demo-service``).

Starts `medveil serve` on a free local port; two centres each protect their half
of cxr-demo with their own key, push their releases (pooling allowed); centre A
asks for one pooled model; each centre predicts on its own release, pulls its
results and decodes them locally with its own key and state; the server stops.
Every step is the command line a hospital would type.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from medveil.service.local import LocalServer


def _medveil(*args: str, cwd: Path) -> str:
    print("$ medveil " + " ".join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "medveil.cli", *args], cwd=cwd,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"demo step failed: {result.stderr.strip()}")
    if result.stdout.strip():
        print(result.stdout.strip(), flush=True)
    return result.stdout.strip()


def _halves(root: Path) -> list[Path]:
    from medveil.data import load_dataset

    data = load_dataset("cxr-demo")
    paths = []
    for centre in range(2):
        arrays = {}
        for split in ("train", "val", "test"):
            part = data.split(split)
            rows = np.arange(centre, len(part), 2)
            arrays[f"{split}_images"] = (part.images[rows, 0] * 255).round().astype(np.uint8)
            arrays[f"{split}_labels"] = part.labels[rows].astype(np.uint8)
        paths.append(root / f"centre{centre}.npz")
        np.savez(paths[-1], **arrays)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", default="smoke", help="training budget (smoke, quick)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="medveil-service-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    _halves(root)
    for name in ("a", "b"):
        _medveil("serve", "token", "add", name, "--data-dir", "srv", "--out", f"{name}.token",
                 cwd=root)
    with LocalServer(root / "srv", cwd=root, quiet=False) as server:
        url = server.url
        releases = {}
        for index, name in enumerate(("a", "b")):
            _medveil("keygen", f"{name}.key", cwd=root)
            _medveil("protect", "--scheme", "plain", "--key", f"{name}.key", "--data",
                     f"centre{index}.npz", "--out", f"{name}-release", "--state",
                     f"{name}-state", cwd=root)
            releases[name] = _medveil("remote", "push", "--server", url, "--token-file",
                                      f"{name}.token", "--data", f"{name}-release",
                                      "--pooling", cwd=root)
        model = _medveil("remote", "train", "--server", url, "--token-file", "a.token",
                         "--release", releases["a"], "--release", releases["b"], "--budget",
                         args.budget, cwd=root)
        for index, name in enumerate(("a", "b")):
            _medveil("remote", "predict", "--server", url, "--token-file", f"{name}.token",
                     "--release", releases[name], "--model", model, "--out",
                     f"{name}-results", cwd=root)
            _medveil("decode", "--key", f"{name}.key", "--state", f"{name}-state",
                     "--results", f"{name}-results", "--out", f"{name}-predictions.csv",
                     "--data", f"centre{index}.npz", cwd=root)
        print(f"done: the pooled model served both centres; files in {root}")


if __name__ == "__main__":
    main()
