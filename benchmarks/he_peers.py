"""medveil's CKKS inference side by side with Orion on the same folded weights.

Orion (``orion-fhe``, Lattigo backend) lives in its own virtual environment, never
in the project's: ``make bench-peers`` makes ``.venv-orion`` and runs this script.
The driver (project venv) trains the networks with medveil's standard loop on
PneumoniaMNIST, folds them (BN and the polynomial's affine part into the layers:
what is left is ``conv -> x^2 -> fc -> x^2 -> fc``) and writes the folded weights
and the test images to a work folder. It then starts one worker process per
system, each of which loads the weights, makes its keys and compiles, and
sends the images to them **interleaved** (image i to medveil, then to Orion, then
i+1), so both see the same machine. Each worker times one image end to end
(encode and encrypt, evaluate, decrypt) and checks its logits against the
plaintext folded network; batch mode is timed once per system on a full batch.

Networks: the TenSEAL tutorial network (conv 7x7 stride 3, 4 channels, fc 64) and
Orion's LoLa shape (conv 2x2 stride 2, 5 channels, fc 100), both at 28x28.
Orion's batch is swept (``--orion-batch``) and its best compared.
Parameters: both systems at N = 8192 within the 128-bit bound (218 bits),
scale 2^27. Orion's last prime is small (Lattigo keeps the first prime of its
chain for the output): the output layer is scaled by the same power of two as
medveil's (``output_scale``) and divided back after decryption. Example::

    make bench-peers            # .venv-orion, then the run below
    .venv/bin/python benchmarks/he_peers.py --orion-python .venv-orion/bin/python \\
        --images 40 --out runs/he_peers.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NETWORKS = ("tutorial", "lola")


# ----------------------------------------------------------------------------- workers
def _medveil_worker(folder: Path, network: str, batch: int):
    """(one image -> (latency s, logits), batch -> ms per image) with medveil's packing."""
    from medveil.he.batch import BatchEvaluator, decrypt_batch, encrypt_batch
    from medveil.he.ckks import OwnerKeys, SealBackend
    from medveil.he.model import HEModel
    from medveil.he.packing import evaluate_packed
    from medveil.keys import Key

    model = HEModel.load(folder / f"{network}.he")
    plan = model.plan
    owner = OwnerKeys(Key.generate(), model.he_params, plan.rotation_steps)
    backend = SealBackend(owner.public)

    def single(image: np.ndarray) -> tuple[float, list[float]]:
        started = time.perf_counter()
        cts = [owner.encrypt(v) for v in plan.pack_image(image)]
        out = evaluate_packed(plan, cts, backend)
        logits = owner.decrypt(out)[:plan.num_classes] / plan.output_scale
        return time.perf_counter() - started, logits.tolist()

    def batched(images: np.ndarray) -> float:
        started = time.perf_counter()
        outputs = BatchEvaluator(owner.public, model.net).run(encrypt_batch(owner, images))
        decrypt_batch(owner, outputs, len(images), model.net.output_scale)
        return 1000 * (time.perf_counter() - started) / len(images)

    return single, batched


def _orion_worker(folder: Path, network: str, batch: int):
    """The same with Orion: its modules carry the folded weights; BN is already folded."""
    import orion
    import orion.nn as on
    import torch

    weights = dict(np.load(folder / f"{network}.npz"))
    first = torch.from_numpy(weights["first_weight"]).float()[:, None]
    channels, _, kernel, _ = first.shape
    stride = int(weights["stride"])
    hidden = torch.from_numpy(weights["hidden_weight"]).float()
    final = torch.from_numpy(weights["final_weight"]).float()

    class Folded(on.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = on.Conv2d(1, channels, kernel_size=kernel, stride=stride, padding=0)
            self.act1 = on.Quad()
            self.flatten = on.Flatten()
            self.fc1 = on.Linear(hidden.shape[1], hidden.shape[0])
            self.act2 = on.Quad()
            self.fc2 = on.Linear(final.shape[1], final.shape[0])

        def forward(self, x):
            x = self.act1(self.conv1(x))
            x = self.act2(self.fc1(self.flatten(x)))
            return self.fc2(x)

    def build():
        net = Folded()
        with torch.no_grad():
            net.conv1.weight.copy_(first)
            net.conv1.bias.copy_(torch.from_numpy(weights["first_bias"]).float())
            net.fc1.weight.copy_(hidden)
            net.fc1.bias.copy_(torch.from_numpy(weights["hidden_bias"]).float())
            net.fc2.weight.copy_(final)
            net.fc2.bias.copy_(torch.from_numpy(weights["final_bias"]).float())
        net.eval()  # Orion's eval returns nothing
        return net

    config = {"ckks_params": {"LogN": 13, "LogQ": [33, 27, 27, 27, 27, 27], "LogP": [50],
                              "LogScale": 27, "H": 192, "RingType": "standard"},
              "orion": {"margin": 2, "embedding_method": "hybrid", "backend": "lattigo",
                        "fuse_modules": True, "debug": False}}
    orion.init_scheme(config)
    images = torch.from_numpy(weights["images"]).float()
    scale = float(weights["output_scale"])

    def compiled(count: int):
        # Orion packs the batch it was fitted with: one compile per batch size.
        net = build()
        orion.fit(net, images[:count])
        level = orion.compile(net)
        net.he()
        return net, level

    net, level = compiled(1)

    def single(image: np.ndarray) -> tuple[float, list[float]]:
        started = time.perf_counter()
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
        out = net(orion.encrypt(orion.encode(x, level)))
        logits = out.decrypt().decode().flatten()[:final.shape[0]].double().numpy() / scale
        return time.perf_counter() - started, logits.tolist()

    def batched(batch_images: np.ndarray) -> float:
        bnet, blevel = compiled(len(batch_images))
        started = time.perf_counter()
        x = torch.from_numpy(np.asarray(batch_images, dtype=np.float32))[:, None]
        bnet(orion.encrypt(orion.encode(x, blevel))).decrypt().decode()
        return 1000 * (time.perf_counter() - started) / len(batch_images)

    return single, batched


def worker(system: str, folder: Path, network: str, batch: int) -> None:
    """Serve ``image I`` / ``batch`` / ``quit`` lines on stdin with one JSON line each."""
    import contextlib
    import os

    make = _medveil_worker if system == "medveil" else _orion_worker
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115 - Orion prints
        single, batched = make(folder, network, batch)
    images = np.load(folder / "images.npy")
    print(json.dumps({"ready": system}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "quit":
            break
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
            if command == "image":
                seconds, logits = single(images[int(rest[0])])
                answer = {"seconds": seconds, "logits": logits}
            else:
                size = int(rest[0]) if rest else batch
                answer = {"batch_ms_per_image": batched(images[np.arange(size) % len(images)]),
                          "batch": size}
        print(json.dumps(answer), flush=True)


# ----------------------------------------------------------------------------- driver
def _prepare(folder: Path, data_path: str, images: int, epochs: int, seed: int) -> dict:
    """Train and fold both networks with medveil; write weights and test images."""
    from medveil.data import load_dataset
    from medveil.he.model import train_he_model

    data = load_dataset(data_path, seed=seed)
    test = data.split("test")
    chosen = test.images[:images, 0].astype(np.float64)
    np.save(folder / "images.npy", chosen)
    reference = {}
    for network in NETWORKS:
        model, _ = train_he_model(data, architecture=network, epochs=epochs, seed=seed)
        model.save(folder / f"{network}.he")
        net = model.net
        np.savez(folder / f"{network}.npz", first_weight=net.first_weight,
                 first_bias=net.first_bias, hidden_weight=net.hidden_weight,
                 hidden_bias=net.hidden_bias, final_weight=net.final_weight,
                 final_bias=net.final_bias, stride=net.stride, output_scale=net.output_scale,
                 images=chosen[:, None])
        reference[network] = net.forward(chosen)
    return reference


class _Worker:
    def __init__(self, python: str, system: str, folder: Path, network: str, batch: int):
        self.system = system
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", system, "--folder", str(folder), "--network", network,
             "--batch", str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ask(None)

    def ask(self, line: str | None) -> dict:
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise SystemExit(f"the {self.system} worker stopped (see its error above)")
        return json.loads(answer)

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("medveil", "orion"))
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--network", choices=NETWORKS)
    parser.add_argument("--data", default=str(SHARED / "pneumoniamnist_28_balanced.npz"))
    parser.add_argument("--orion-python", default=".venv-orion/bin/python")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4096,
                        help="medveil's batch: one image per slot, every slot filled")
    parser.add_argument("--orion-batch", default="8,16,32",
                        help="Orion's batch sizes, comma list; its best is compared (it "
                             "compiles for the batch it is fitted with)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/he_peers.json"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.network, args.batch)
        return
    if not Path(args.orion_python).exists():
        raise SystemExit(f"no Orion environment at {args.orion_python}: run `make bench-peers`")
    started = time.perf_counter()
    result: dict = {"images": args.images, "data": args.data, "networks": {},
                    "batch": {"medveil": args.batch, "orion": args.orion_batch}}
    orion_sizes = [int(v) for v in args.orion_batch.split(",")]
    with tempfile.TemporaryDirectory(prefix="medveil-peers-") as tmp:
        folder = Path(tmp)
        reference = _prepare(folder, args.data, args.images, args.epochs, args.seed)
        for network in NETWORKS:
            workers = [_Worker(sys.executable, "medveil", folder, network, args.batch),
                       _Worker(args.orion_python, "orion", folder, network, orion_sizes[0])]
            seconds = {w.system: [] for w in workers}
            agree = {w.system: 0 for w in workers}
            error = {w.system: 0.0 for w in workers}
            for i in range(args.images):
                ref = reference[network][i]
                for w in workers:
                    answer = w.ask(f"image {i}")
                    seconds[w.system].append(answer["seconds"])
                    logits = np.asarray(answer["logits"])
                    agree[w.system] += int(logits.argmax() == ref.argmax())
                    error[w.system] = max(error[w.system], float(np.abs(logits - ref).max()))
            medveil, orion = workers
            batch = {"medveil": medveil.ask(f"batch {args.batch}")["batch_ms_per_image"]}
            sweep: dict[int, float | None] = {}
            for size in orion_sizes:  # a size Orion cannot hold (killed) ends the sweep
                try:
                    sweep[size] = orion.ask(f"batch {size}")["batch_ms_per_image"]
                except SystemExit:
                    sweep[size] = None
                    break
            done = {k: v for k, v in sweep.items() if v is not None}
            best = min(done, key=done.get)
            batch["orion"] = done[best]
            for w in workers:
                if w.proc.poll() is None:
                    w.close()
            median = {s: statistics.median(v) for s, v in seconds.items()}
            result["networks"][network] = {
                "single_median_s": median, "batch_ms_per_image": batch,
                "orion_batch_sweep_ms_per_image": sweep, "orion_best_batch": best,
                "argmax_agreement": {s: agree[s] / args.images for s in agree},
                "max_abs_logit_error": error,
                "single_ratio_orion_over_medveil": median["orion"] / median["medveil"],
                "batch_ratio_orion_over_medveil": batch["orion"] / batch["medveil"]}
    result["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["networks"], indent=2))


if __name__ == "__main__":
    main()
