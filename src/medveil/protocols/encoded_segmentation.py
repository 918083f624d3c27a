"""``encoded_segmentation``: the server maps encoded images to encoded masks (privacy_sf).

Chen et al. 2024's split: the client (owner) encodes its images and its training
masks under its keyed transform; the server (processor) trains a mapping network
on the encoded training pairs only and maps the client's encoded test images to
encoded masks; the client decodes them with its key and state. The release holds:

* ``train``: the encoded training pairs, the client's flipped copies included
  (``view``: image tokens, ``encoded_masks``: mask tokens);
* ``test``: the encoded test images, one block per test-time copy (no masks).

Several releases (centres, each under its own key) train one mapping network, a
per-centre adapter in front and behind and a shared trunk; the model records the
releases in order, so a prediction uses the adapters of the release's centre.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from medveil.errors import ConfigError, DataError, ModelFileError
from medveil.protocols.base import (
    BenchRun,
    Decoded,
    Protocol,
    in_memory_results,
    register_protocol,
)
from medveil.schemes.base import EncodedPairs


class MappingModel:
    """The server's trained mapping network and the releases it was trained on."""

    def __init__(self, net, *, scheme: dict[str, Any], image_shape: tuple[int, ...],
                 releases: list[str], train_s: float = 0.0) -> None:
        self.net, self.scheme, self.image_shape = net, scheme, tuple(image_shape)
        self.releases, self.train_s = list(releases), train_s
        self.task = "segmentation"

    def server(self):
        from medveil.schemes import get_scheme_class

        return get_scheme_class(self.scheme["name"]).for_server(self.scheme["params"],
                                                                self.image_shape)


def _server_for(release):
    from medveil.schemes import get_scheme_class

    scheme = release.manifest["scheme"]
    shape = release.manifest.get("dataset", {}).get("image_shape")
    if not shape:
        raise DataError(f"{release.label} does not record its image shape; re-protect it")
    return get_scheme_class(scheme["name"]).for_server(scheme["params"], shape)


@register_protocol
class EncodedSegmentationProtocol(Protocol):
    name = "encoded_segmentation"
    summary = ("the server trains a mapping network on encoded (image, mask) pairs and maps "
               "encoded test images to encoded masks; the owner decodes them")

    def release(self, scheme, data, *, key):
        if data.task != "segmentation":
            raise ConfigError(f"scheme '{scheme.name}' segments; {data.name} has no masks")
        train, test = data.split("train"), data.split("test")
        pairs = scheme.training_pairs(train.images, train.masks, key=key)
        arrays = {"train": {"view": pairs.images, "encoded_masks": pairs.masks},
                  "test": {"view": scheme.encode_test_copies(test.images, key=key)}}
        return arrays, {}, {"test_images": len(test)}

    # -- processor ------------------------------------------------------------------
    def train(self, releases, *, budget, seed: int, progress: bool = False) -> MappingModel:
        first = releases[0]
        for other in releases[1:]:
            if other.manifest["scheme"] != first.manifest["scheme"] or \
                    other.manifest["dataset"]["image_shape"] != \
                    first.manifest["dataset"]["image_shape"]:
                raise ConfigError(f"{other.label} was made with other scheme parameters or "
                                  f"image size than {first.label}; pool releases made alike")
        server = _server_for(first)
        pairs = [EncodedPairs(r.part("train")["view"], r.part("train")["encoded_masks"])
                 for r in releases]
        started = time.perf_counter()
        net = server.train_mapping(pairs, seed=seed)
        return MappingModel(net, scheme=first.manifest["scheme"],
                            image_shape=first.manifest["dataset"]["image_shape"],
                            releases=[r.content_id for r in releases],
                            train_s=time.perf_counter() - started)

    def predict(self, model: MappingModel, release, *, split: str):
        if release.manifest["scheme"] != model.scheme:
            raise ConfigError(f"{release.label} was made with other scheme parameters than "
                              "the model was trained on; use a model trained on it")
        if release.content_id in model.releases:
            centre = model.releases.index(release.content_id)
        elif len(model.releases) == 1:
            centre = 0  # a single-centre model serves new releases of the same client
        else:
            raise ConfigError(f"{release.label} is none of the {len(model.releases)} releases "
                              "this pooled model was trained on: its centre has no adapter")
        tokens = release.part(split)["view"]
        return ({"encoded_masks": model.server().map_tokens(model.net, tokens, centre=centre)},
                {"centre": centre})

    def save_model(self, model: MappingModel, path, *, force: bool = False) -> None:
        import torch

        from medveil.atomic import atomic_write_bytes
        from medveil.tasks import MODEL_FORMAT

        record = {"format": MODEL_FORMAT, "protocol": self.name, "task": "segmentation",
                  "scheme": model.scheme, "image_shape": list(model.image_shape),
                  "releases": model.releases, "train_s": model.train_s,
                  "net_config": model.net.config, "state_dict": model.net.state_dict()}
        buffer = io.BytesIO()
        torch.save(record, buffer)
        atomic_write_bytes(path, buffer.getvalue(), force=force)

    def load_model(self, record: dict[str, Any], path) -> MappingModel:
        from medveil.nets.encoded_seg import MappingNetwork

        try:
            config = record["net_config"]
            net = MappingNetwork(config["image_dim"], config["mask_dim"],
                                 centres=config["centres"], width=config["width"],
                                 blocks=config["blocks"])
            net.load_state_dict(record["state_dict"])
        except (KeyError, RuntimeError, TypeError) as exc:
            raise ModelFileError(f"{path} is not a complete mapping-network file "
                                 f"({type(exc).__name__}); train it again") from None
        net.eval()
        return MappingModel(net, scheme=record["scheme"], image_shape=record["image_shape"],
                            releases=record["releases"], train_s=record.get("train_s", 0.0))

    # -- owner ----------------------------------------------------------------------
    def decode(self, scheme, results, *, key) -> Decoded:
        if key is None:
            raise ConfigError("decoding encoded masks needs the owner's --key")
        tokens = results.part(results.manifest["split"])["encoded_masks"]
        return Decoded("segmentation", masks=scheme.decode_test_copies(tokens, key=key))

    def bench_row(self, run: BenchRun) -> dict[str, Any]:
        """Release, train, predict and decode as on the command line; then the image
        attacks on the encoded images (the plain encodings of the train and test
        images, as any view). ``wrong_key``: a client who decodes the server's
        predictions for the unflipped copy with a key of its own."""
        from medveil.bench import GRID_IMAGES, image_attacks, protect_all, public_images
        from medveil.metrics import segmentation_metrics
        from medveil.protocols.view import release_header
        from medveil.store import ProtectedStore

        scheme, data, row = run.scheme, run.data, run.row
        train, test = data.split("train"), data.split("test")
        started = time.perf_counter()
        with run.clock.stage("protect"):
            arrays, extras, info = self.release(scheme, data, key=run.key)
        protect_ms = 1000 * (time.perf_counter() - started) / (len(train) + len(test))
        release = ProtectedStore.in_memory(arrays=arrays, extras=extras,
                                           header=release_header(scheme, data, self, info),
                                           key=run.key)
        with run.clock.stage("task_training"):
            model = self.train([release], budget=run.budget, seed=run.seed)
        started = time.perf_counter()  # the round trip: the server maps, the client decodes
        with run.clock.stage("predict"):
            predicted, _ = self.predict(model, release, split="test")
            results = in_memory_results(predicted, "test")
            masks = self.decode(scheme, results, key=run.key).masks
        infer_ms = 1000 * (time.perf_counter() - started) / len(test)
        row["params"] = dict(scheme.params)
        row["utility"] = segmentation_metrics(masks, test.masks)
        first_copy = predicted["encoded_masks"][:len(test)]
        row["wrong_key_masks"] = segmentation_metrics(
            scheme.decode_masks_bypassing_check(first_copy, run.wrong_key), test.masks)
        with run.clock.stage("protect"):
            views = {"train": protect_all(scheme, train.images, run.key),
                     "test": arrays["test"]["view"][:len(test)]}
        pictures: dict[str, np.ndarray] = {"original": test.images[:GRID_IMAGES],
                                           "decoded mask": masks[:GRID_IMAGES].astype(np.float32)}
        image_attacks(run.spec, scheme, row, pictures, train, test, views, run.budget, run.seed,
                      spare=public_images(run.data), clock=run.clock, cache=run.cache)
        row["cost"] = {"fit_s": run.fit_s, "protect_ms_per_image": protect_ms,
                       "train_s": model.train_s, "infer_ms_per_image": infer_ms,
                       "view_bytes_per_image": views["test"].nbytes / len(test),
                       "plain_bytes_per_image": float(np.prod(test.image_shape))}
        row["_pictures"] = pictures
        return row
