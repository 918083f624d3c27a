"""What one encrypted image costs per HE architecture: rotations, products, seconds.

The packing's cost depends on the network's shape (and which of a convolution's
diagonals are empty), not on its trained values, so each architecture is trained
a few steps on real images (the bundled chest X-rays, or ``--data``) to set its
batch norms, folded and planned with the CKKS parameters its depth needs; then
``--images`` images are encrypted, evaluated with SEAL and decrypted, one at a
time, and the medians written per architecture (with the split into rotations,
plaintext products and additions, and the largest logit error against the
plaintext network). For the architecture choice and the depth optimisations;
the accuracy figures come from ``ckks_bench.py``. Example::

    python benchmarks/he_latency.py --size 64 --architectures wide,wide_pool \\
        --out runs/he_latency.json

``--batch 8192`` adds batch mode (one image per slot, every slot filled), with the
engine ``--batch-engine`` (auto: residue matrix products where available), shared among
``--batch-workers`` processes (default: one per CPU where the engine can share its work),
the pixels encrypted up front or as the first layer reads them (``--batch-streamed``;
auto: streamed where the pixel ciphertexts would take over half the memory).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _briefly_trained(spec, images: np.ndarray, labels: np.ndarray, seed: int):
    import torch

    from medveil.he.nets import build_he_net

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_he_net(spec, 1, 2)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(10):
        pick = torch.randperm(len(x), generator=generator)[:64]
        loss = torch.nn.functional.cross_entropy(net(x[pick]), y[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


def measure(architecture: str, data, *, images: int, seed: int,
            channels_per_segment: int | None, batch: int = 0, batch_engine: str = "auto",
            batch_workers: int | None = None, batch_streamed: bool | None = None) -> dict:
    """Median single-image figures of one architecture on ``data``'s test images."""
    from medveil.he.ckks import CKKSParameters, OwnerKeys, SealBackend
    from medveil.he.nets import arch_spec, fold_network
    from medveil.he.packing import evaluate_packed, plan_network
    from medveil.keys import Key

    train, test = data.split("train"), data.split("test")
    spec = arch_spec(architecture, train.image_shape[-1])
    net = _briefly_trained(spec, train.images, train.labels, seed)
    folded = fold_network(net, spec, calibration=train.images[:, 0])
    params = CKKSParameters.for_depth(folded.depth)
    plan = plan_network(folded, slots=params.slots, channels_per_segment=channels_per_segment)
    owner = OwnerKeys(Key.generate(), params, plan.rotation_steps)
    spent = {"rotate": 0.0, "mul_weight": 0.0, "add": 0.0}

    class Timed(SealBackend):
        """SEAL with the time of each operation kind added up."""

    for op in spent:
        def timed(self, *args, _op=op):
            started = time.perf_counter()
            out = getattr(SealBackend, _op)(self, *args)
            spent[_op] += time.perf_counter() - started
            return out
        setattr(Timed, op, timed)

    backend = Timed(owner.public)
    pictures = test.images[:images + 1, 0]
    evaluate_packed(plan, [owner.encrypt(v) for v in plan.pack_image(pictures[0])], backend)
    rows = []
    for image in pictures[1:]:  # the first image encoded the weights (compile)
        spent.update(dict.fromkeys(spent, 0.0))
        backend.rotations = 0
        started = time.perf_counter()
        cts = [owner.encrypt(v) for v in plan.pack_image(image)]
        encrypted = time.perf_counter()
        out = evaluate_packed(plan, cts, backend)
        evaluated = time.perf_counter()
        logits = owner.decrypt(out)[:plan.num_classes] / plan.output_scale
        done = time.perf_counter()
        rows.append({"encrypt_s": encrypted - started, "eval_s": evaluated - encrypted,
                     "decrypt_s": done - evaluated, "latency_s": done - started,
                     "rotate_s": spent["rotate"], "products_s": spent["mul_weight"],
                     "add_s": spent["add"], "rotations": backend.rotations,
                     "logit_error": float(np.abs(logits - folded.forward(image[None])[0]).max())})
    medians = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    medians["logit_error"] = max(r["logit_error"] for r in rows)
    products = len(plan.hidden) + sum(len(m.vectors) for m in plan.middle) + \
        plan.segments * plan.groups + plan.num_classes
    row = {"architecture": architecture, "image_size": spec.image_size, "levels": folded.depth,
           "poly_modulus_degree": params.poly_modulus_degree, "packing": plan.describe(),
           "products": products, "images": len(rows), **medians}
    if batch:
        from medveil.he.batch import measure_batch

        row.update(measure_batch(owner, folded, test.images[:, 0], batch, engine=batch_engine,
                                 workers=batch_workers, streamed=batch_streamed))
    return row


def main() -> None:
    import torch

    from medveil.data import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cxr-demo")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--architectures", default="deep,wide,wide_pool")
    parser.add_argument("--channels-per-segment", type=int)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0,
                        help="also batch mode on this many images (0: skip; at most the slots)")
    parser.add_argument("--batch-engine", default="auto", choices=["auto", "rns", "seal"])
    parser.add_argument("--batch-streamed", default="auto", choices=["auto", "on", "off"],
                        help="encrypt the batch's pixels as the first layer reads them")
    parser.add_argument("--batch-workers", type=int, default=None,
                        help="processes for batch mode (default: one per CPU, rns engine)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, size=args.size, color="gray", seed=args.seed)
    results = []
    for architecture in args.architectures.split(","):
        row = measure(architecture, data, images=args.images, seed=args.seed,
                      channels_per_segment=args.channels_per_segment, batch=args.batch,
                      batch_engine=args.batch_engine, batch_workers=args.batch_workers,
                      batch_streamed={"auto": None, "on": True, "off": False}[
                          args.batch_streamed])
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "packing"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
