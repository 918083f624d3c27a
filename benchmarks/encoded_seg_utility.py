"""privacy_sf utility alone: fit the client once, then the server with and without augmentation.

No attacks: this is for choosing defaults and for the augmentation ablation
before a full bench. Prints the mask auto-encoder's Dice on the test masks (the
ceiling any server can reach through these encodings), then Dice and IoU of
the decoded server predictions per augmentation, with the client's test-time
copies and with one copy. Example::

    python benchmarks/encoded_seg_utility.py --data ../shared/data/segmentation/chase_db1 \
        --size 256
"""

from __future__ import annotations

import argparse
import json
import time

from medveil.attacks.suite import seeded_key
from medveil.bench import parse_value
from medveil.data import load_dataset
from medveil.metrics import segmentation_metrics
from medveil.protocols.mapping_server import MappingServer
from medveil.schemes import create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="chase-demo")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("params", nargs="*", help="scheme parameters as NAME=VALUE")
    args = parser.parse_args()
    params = {k: parse_value(v) for k, v in (p.split("=", 1) for p in args.params)}
    data = load_dataset(args.data, seed=args.seed, size=args.size)
    train, test = data.split("train"), data.split("test")
    key = seeded_key("victim", args.seed)
    started = time.perf_counter()
    scheme = create("privacy_sf", **params).fit(train, key=key, seed=args.seed)
    fit_s = time.perf_counter() - started
    pairs = scheme.training_pairs(train.images, train.masks, key=key)
    server = MappingServer(scheme.params, train.image_shape)  # no key, no client state
    ceiling = segmentation_metrics(
        scheme.decode_masks(scheme.protect_masks(test.masks, key=key), key=key), test.masks)
    print(json.dumps({"fit_s": round(fit_s), "mask_autoencoder": ceiling}), flush=True)
    for augment in ("sequence", "none"):
        started = time.perf_counter()
        net = server.train([pairs], seed=args.seed, augment=augment)
        train_s = time.perf_counter() - started
        for copies in dict.fromkeys((scheme.params["test_copies"], "none")):
            masks = scheme.segment(test.images, lambda tokens, n=net: server.map_tokens(n, tokens),
                                   key=key, copies=copies)
            print(json.dumps({"augment": augment, "test_copies": copies,
                              **segmentation_metrics(masks, test.masks),
                              "train_s": round(train_s)}), flush=True)


if __name__ == "__main__":
    main()
