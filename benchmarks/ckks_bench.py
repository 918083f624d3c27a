"""CKKS speed and correctness, side by side with the TenSEAL tutorial pipeline, in one run.

Trains the tutorial network (28x28) and the deep network (64x64) with the
standard loop, folds them, and measures on the real test splits:

* single-image latency of medveil's packing (plain model and encrypted model),
  argmax agreement with the plaintext model and the largest logit error;
* the TenSEAL tutorial pipeline (``im2col_encoding``, ``conv2d_im2col``, ``mm``)
  on the same folded network and images: its latency and its own agreement
  (not fixed: it is the reference point);
* batch mode (one image per slot) throughput for the 28x28 network;
* the 64x64 network's latency, accuracy and batch throughput (``deep_*``), the
  128x128 one's (``large_*``), and the standard classifier's AUC on the same split.

Writes one JSON file (keys listed in the issue plus details). Example::

    python benchmarks/ckks_bench.py --out runs/ckks.json
    python benchmarks/ckks_bench.py --quick --out /tmp/ckks-quick.json   # demo data, minutes
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

from medveil.atomic import atomic_write_bytes, check_output
from medveil.data.readers import load_dataset
from medveil.he.baseline import TutorialPipeline
from medveil.he.batch import measure_batch
from medveil.keys import Key
from medveil.schemes import create

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _probs(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(scheme, test, key, *, encrypted_model: bool, seed: int = 0) -> dict:
    """The ckks workflow (release, processor's evaluation, owner's decryption) on ``test``,
    through the protocol the command line runs; the model plain or encrypted."""
    from medveil.budgets import get_budget
    from medveil.protocols import get_protocol, run_task

    scheme.params["encrypted_model"] = encrypted_model
    # the protocol's section (the figures below) comes with a wrong key; ckks reads none,
    # and no budget either (the processor evaluates the shipped model, it trains nothing)
    outcome = run_task(get_protocol(scheme.protocol), scheme, test, key=key,
                       budget=get_budget("quick"), seed=seed, wrong_key=Key.generate())
    return {**outcome.section, "metrics": outcome.decoded.metrics(test)}


def _fit(data, architecture: str, epochs: int | None, seed: int, key: Key,
         encrypted_model=False):
    """The ckks scheme as the bench fits it (its defaults unless ``epochs`` is named)."""
    named = {} if epochs is None else {"epochs": epochs}
    scheme = create("ckks", architecture=architecture, encrypted_model=encrypted_model, **named)
    scheme.fit(scheme.fit_data(data), key=key, seed=seed)
    return scheme


def bench_tutorial(data, *, epochs: int | None, seed: int, key: Key, baseline_images: int,
                   encrypted_images: int, batch_images: int) -> dict:
    scheme = _fit(data, "tutorial", epochs, seed, key)
    test = data.split("test")
    single = _measure(scheme, test, key, encrypted_model=False, seed=seed)
    enc_model = _measure(scheme, test.subset(np.arange(min(encrypted_images, len(test)))), key,
                         encrypted_model=True, seed=seed)
    net = scheme.model.net
    images = scheme.model.check_images(test.images)
    reference = net.forward(images)

    # The TenSEAL tutorial pipeline on the same folded weights and images.
    pipeline = TutorialPipeline(net)
    pipeline.logits(images[0])  # warm-up, as for ours
    n_base = min(baseline_images, len(images))
    started = time.perf_counter()
    base = np.stack([pipeline.logits(image) for image in images[:n_base]])
    baseline_latency = (time.perf_counter() - started) / n_base

    batch = measure_batch(scheme.owner_keys(key), net, images, batch_images)
    latency = single["latency_ms_per_image"] / 1000
    return {
        "data": data.name, "test_images": len(images), "architecture": "tutorial",
        "latency_s": latency, "baseline_latency_s": baseline_latency,
        "speedup": baseline_latency / latency,
        "server_eval_s": single["eval_ms_per_image"] / 1000,
        "encrypted_model_latency_s": enc_model["latency_ms_per_image"] / 1000,
        "encrypted_model_images": enc_model["images"],
        "encrypted_model_ratio": enc_model["latency_ms_per_image"] / single["latency_ms_per_image"],
        "encrypted_model_argmax_agreement": enc_model["argmax_agreement"],
        "encrypted_model_max_abs_logit_error": enc_model["max_abs_logit_error"],
        **batch,
        "argmax_agreement": single["argmax_agreement"],
        "max_abs_logit_error": single["max_abs_logit_error"],
        "encrypted_metrics": single["metrics"], "plaintext_metrics": single["plaintext_metrics"],
        "baseline_images": n_base,
        "baseline_argmax_agreement": float(np.mean(base.argmax(1) == reference[:n_base].argmax(1))),
        "baseline_max_abs_logit_error": float(np.abs(base - reference[:n_base]).max()),
        "ciphertext_bytes_per_image": single["ciphertext_bytes_per_image"],
        "rotations_per_image": single["rotations_per_image"], "packing": single["packing"],
        "compile_s": single["compile_s"],
    }


def bench_deep(data, *, epochs: int | None, seed: int, key: Key, max_images: int,
               architecture: str = "deep", batch_images: int = 0) -> dict:
    """A network above one ciphertext's worth of work: single image (every test image,
    or ``max_images``), the encrypted model on 20, batch mode on ``batch_images``."""
    scheme = _fit(data, architecture, epochs, seed, key)
    test = data.split("test")
    test = test.subset(np.arange(min(max_images, len(test))))
    single = _measure(scheme, test, key, encrypted_model=False, seed=seed)
    enc = _measure(scheme, test.subset(np.arange(min(20, len(test)))), key,
                   encrypted_model=True, seed=seed)
    batch = measure_batch(scheme.owner_keys(key), scheme.model.net,
                           scheme.model.check_images(test.images), batch_images) \
        if batch_images else {}
    return {"data": data.name, "architecture": scheme.model.info["architecture"],
            "he_params": scheme.he_params.to_dict(), "test_images": single["images"], **batch,
            "latency_s": single["latency_ms_per_image"] / 1000,
            "server_eval_s": single["eval_ms_per_image"] / 1000,
            "encrypted_model_latency_s": enc["latency_ms_per_image"] / 1000,
            "argmax_agreement": single["argmax_agreement"],
            "max_abs_logit_error": single["max_abs_logit_error"],
            "encrypted_metrics": single["metrics"],
            "plaintext_metrics": single["plaintext_metrics"],
            "ciphertext_bytes_per_image": single["ciphertext_bytes_per_image"],
            "rotations_per_image": single["rotations_per_image"], "packing": single["packing"]}


def _standard_auc(scorecard: Path | None, data, seed: int) -> float:
    """The standard classifier's test AUC on the same split: the bench's plain row."""
    if scorecard is not None:
        rows = json.loads(scorecard.read_text())["results"]
        return float(next(r for r in rows if r["scheme"] == "plain")["utility"]["auc"])
    from medveil.tasks import evaluate_classifier, train_classifier

    val = data.split("val") if "val" in data.split_names else None
    model = train_classifier(data.split("train"), val=val, seed=seed)
    return float(evaluate_classifier(model, data.split("test"))["auc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data28", default=str(SHARED / "pneumoniamnist_28_balanced.npz"))
    parser.add_argument("--data64", default=str(SHARED / "cxr_pneumonia_64.npz"))
    parser.add_argument("--data128", default=str(SHARED / "cxr_pneumonia_128.npz"))
    parser.add_argument("--architecture", default="auto",
                        help="the 64 and 128 px network (auto: the scheme's default)")
    parser.add_argument("--deep-batch", type=int, default=8192,
                        help="batch-mode images for the 64 px network, at most its slots "
                             "(0: skip)")
    parser.add_argument("--standard-auc-from", type=Path,
                        help="a scorecard whose plain row ran on the same split (else the "
                             "standard classifier is trained here)")
    parser.add_argument("--quick", action="store_true",
                        help="bundled demo data resized to 28, small subsets (minutes)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="the HE networks' epochs (default: the ckks scheme's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="tutorial,deep64,large128",
                        help="which measurements to run (comma-separated; keys of the parts "
                             "left out are null)")
    parser.add_argument("--out", default="runs/ckks_bench.json")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if this benchmark wrote it before")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output(out, force=args.force, option="--out")  # before an hour's work, not after
    key = Key.generate()  # a fresh owner key: nothing here depends on its value
    started = time.perf_counter()
    if args.quick:
        data28 = load_dataset("cxr-demo", size=28, seed=args.seed)
        data64 = load_dataset("cxr-demo", seed=args.seed)
        data128 = load_dataset("cxr-demo", size=128, seed=args.seed)
        sizes = {"baseline_images": 3, "encrypted_images": 5, "batch_images": 256}
        deep_images, deep_batch = 20, min(args.deep_batch, 256)
    else:
        data28 = load_dataset(args.data28, seed=args.seed)
        data64 = load_dataset(args.data64, seed=args.seed)
        data128 = load_dataset(args.data128, seed=args.seed)
        sizes = {"baseline_images": 40, "encrypted_images": 100, "batch_images": 4096}
        deep_images, deep_batch = 10 ** 9, args.deep_batch
    parts = set(args.parts.split(","))
    unknown = parts - {"tutorial", "deep64", "large128"}
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}: choose from tutorial,deep64,large128")
    tutorial = bench_tutorial(data28, epochs=args.epochs, seed=args.seed, key=key, **sizes) \
        if "tutorial" in parts else {}
    deep = bench_deep(data64, epochs=args.epochs, seed=args.seed, key=key, max_images=deep_images,
                      architecture=args.architecture, batch_images=deep_batch) \
        if "deep64" in parts else {}
    large = bench_deep(data128, epochs=args.epochs, seed=args.seed, key=key,
                       max_images=deep_images, architecture=args.architecture) \
        if "large128" in parts else {}
    standard = _standard_auc(args.standard_auc_from, data64, args.seed) \
        if "deep64" in parts else None
    from medveil.he.ckks import CKKSParameters

    result = {key_: tutorial.get(key_) for key_ in (
        "latency_s", "baseline_latency_s", "speedup", "batch_ms_per_image", "argmax_agreement",
        "max_abs_logit_error", "ciphertext_bytes_per_image")}
    result.update({
        "deep_auc": deep.get("encrypted_metrics", {}).get("auc"),
        "deep_plain_auc": deep.get("plaintext_metrics", {}).get("auc"),
        "deep_latency_s": deep.get("latency_s"),
        "deep_batch_ms_per_image": deep.get("batch_ms_per_image"),
        "large_auc": large.get("encrypted_metrics", {}).get("auc"),
        "large_argmax_agreement": large.get("argmax_agreement"),
        "large_latency_s": large.get("latency_s"),
        "standard_classifier_auc": standard})
    result.update({"peak_rss_mb": _peak_rss_mb(), "tutorial": tutorial, "deep64": deep,
                   "large128": large,
                   "security": CKKSParameters().security(), "quick": args.quick,
                   "wall_s": time.perf_counter() - started,
                   "machine": {"cpu": platform.processor() or platform.machine(),
                               "python": platform.python_version()}})
    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode(), force=args.force)
    print(json.dumps({k: result[k] for k in (
        "latency_s", "baseline_latency_s", "speedup", "batch_ms_per_image", "argmax_agreement",
        "max_abs_logit_error", "peak_rss_mb", "ciphertext_bytes_per_image", "deep_auc",
        "deep_plain_auc", "deep_latency_s", "deep_batch_ms_per_image", "large_auc",
        "large_latency_s", "standard_classifier_auc")}, indent=2))


if __name__ == "__main__":
    main()
