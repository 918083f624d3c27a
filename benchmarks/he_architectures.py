"""Which HE-friendly network diagnoses as well as the standard classifier? Plaintext AUCs.

Every candidate trains with the standard loop (same data, augmentation, budget and
validation-AUC model selection as the bench's classifier), optionally distilled
from the standard classifier (trained first, once), and is scored on the test
split in plaintext: encryption does not change the figure (decrypted predictions
agree with the plaintext twin; ``ckks_bench.py`` measures that). One JSON line
per candidate, appended to ``--out``. A candidate is
``C1/PATCH/STAGES/DISTILL_WEIGHT/TEMPERATURE/EPOCHS``: the patch convolution's
channels and size (stride = size), the stages as in ``ArchSpec.stages`` joined by
commas (each costs two levels), the distillation weight (0: labels only).
Candidates are separated by ``;``. Example (the table in docs/benchmarks.md)::

    W=16/4/conv:32:3:1:1+pool:2,dense:64
    python benchmarks/he_architectures.py --data ../shared/data/cxr_pneumonia_64.npz \\
        --candidates "8/4/conv:8:3:2/0/4/15;$W/0/4/15;$W/0.5/4/15" \\
        --out runs/he_architectures.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import torch

    from medveil.data import load_dataset
    from medveil.he.nets import ArchSpec, build_he_net
    from medveil.tasks import ClassifierConfig, evaluate_classifier, train_classifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--candidates", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data, seed=args.seed)
    train, test = data.split("train"), data.split("test")
    val = data.split("val") if "val" in data.split_names else None
    side = train.image_shape[-1]
    teacher = None
    for item in args.candidates.split(";"):
        c1, patch, stages, weight, temperature, epochs = item.split("/")
        spec = ArchSpec("candidate", side, int(c1), int(patch), int(patch),
                        tuple(stages.split(",")))
        started = time.perf_counter()
        if float(weight) > 0 and teacher is None:
            teacher = train_classifier(train, val=val, seed=args.seed)
        config = ClassifierConfig(epochs=int(epochs), distill_weight=float(weight),
                                  distill_temperature=float(temperature))
        model = train_classifier(train, val=val, config=config, seed=args.seed,
                                 build_net=lambda c, k, spec=spec: build_he_net(spec, c, k),
                                 teacher=teacher if float(weight) > 0 else None)
        metrics = evaluate_classifier(model, test)
        row = {"candidate": item, "levels": spec.depth, "data": data.name,
               "test_auc": metrics["auc"], "test_accuracy": metrics["accuracy"],
               "teacher_auc": (evaluate_classifier(teacher, test)["auc"]
                               if teacher is not None else None),
               "wall_s": time.perf_counter() - started}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
