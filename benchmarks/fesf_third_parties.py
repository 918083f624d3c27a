"""How many of the owner's other patients a fesf release shows, by host set.

fesf surrogates keep their host's phase, so the host's anatomy shows. This fits fesf
(IHM only, the GAN adds nothing to the question) on a data set's training split with
the owner's own patients as hosts and with a public split as hosts, and runs the
bench's third-party attack on the test views against every train and test image;
plain views for scale. Example::

    python benchmarks/fesf_third_parties.py --data cxr-demo --public val
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np

from medveil.attacks import third_parties
from medveil.attacks.suite import seeded_key
from medveil.data import load_dataset
from medveil.schemes import create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cxr-demo")
    parser.add_argument("--public", default="val", help="the split used as public hosts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_dataset(args.data, seed=args.seed)
    train, test = data.split("train"), data.split("test")
    owner = np.concatenate([train.images, test.images])
    rows = len(train) + np.arange(len(test))
    key = seeded_key("victim", args.seed)
    results = {"plain": third_parties(test.images, owner, rows)}
    for hosts, public in (("owner", None), ("public", data.split(args.public))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # hosts=owner warns, by design
            scheme = create("fesf", use_iqem=False, hosts=hosts).fit(
                train, key=key, seed=args.seed, public=public)
        results[f"fesf hosts={hosts}"] = third_parties(scheme.protect(test.images, key=key),
                                                       owner, rows)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
