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
    AttackSurface,
    Decoded,
    ExchangeOwner,
    Protocol,
    TaskOutcome,
    protect_batched,
    register_protocol,
)
from medveil.protocols.mapping_server import EncodedPairs, MappingServer


class MappingModel:
    """The server's trained mapping network and the releases it was trained on."""

    def __init__(self, net, *, scheme: dict[str, Any], image_shape: tuple[int, ...],
                 releases: list[str], train_s: float = 0.0) -> None:
        self.net, self.scheme, self.image_shape = net, scheme, tuple(image_shape)
        self.releases, self.train_s = list(releases), train_s
        self.task = "segmentation"

    def server(self) -> MappingServer:
        return MappingServer(self.scheme["params"], self.image_shape)


def _server_for(release) -> MappingServer:
    shape = release.manifest.get("dataset", {}).get("image_shape")
    if not shape:
        raise DataError(f"{release.label} does not record its image shape; re-protect it")
    return MappingServer(release.manifest["scheme"]["params"], shape)


@register_protocol
class EncodedSegmentationProtocol(Protocol):
    name = "encoded_segmentation"
    summary = ("the server trains a mapping network on encoded (image, mask) pairs and maps "
               "encoded test images to encoded masks; the owner decodes them")
    scheme_needs = ("training_pairs", "encode_test_copies", "decode_test_copies",
                    "decode_masks_bypassing_check")

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
        net = server.train(pairs, seed=seed)
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
        from medveil.model_file import MODEL_FORMAT

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
        if tokens.dtype.kind != "f" or not np.isfinite(tokens).all():
            raise DataError(f"{results.label} holds encoded masks that are not finite numbers; "
                            "refuse them and ask the processor for `medveil predict` output")
        return Decoded("segmentation", masks=scheme.decode_test_copies(tokens, key=key))

    def owner_half(self, scheme, data, *, key, budget, seed, clock=None):
        return EncodedSegmentationOwner(self, scheme, data, key=key, budget=budget,
                                        seed=seed, clock=clock)

    def attack_surface(self, outcome: TaskOutcome) -> AttackSurface:
        """The image attacks on the encoded images: the plain encodings of the train
        images (not the flipped training copies) and the first copy of each test image."""
        owner = outcome.owner
        train, test = owner.data.split("train"), owner.data.split("test")
        with owner.clock.stage("protect"):
            views = {"train": protect_batched(owner.scheme, train.images, owner.key),
                     "test": outcome.release.arrays["test"]["view"][:len(test)]}
        return AttackSurface(views=views, pictures={
            "decoded mask": outcome.decoded.masks[:4].astype(np.float32)})

    def membership_target(self, outcome, data, *, budget, seed: int):
        """The server's mapping network on encoded pairs: the server (or anyone it lets
        query the network) asks whether an encoded image was trained on, scoring the
        encoded mask it maps it to against the candidate's encoded mask. The owner's
        side of the bench encodes the candidates with the owner's key (an upper bound:
        an outsider has no key to encode with)."""
        from medveil.attacks.membership import MembershipTarget, Samples, candidate_splits

        owner, model = outcome.owner, outcome.model
        scheme, key = owner.scheme, owner.key

        def scorer(net, server):
            def score(samples: Samples) -> np.ndarray:
                tokens = scheme.protect(samples.inputs, key=key)
                truth = scheme.protect_masks(np.asarray(samples.truth, np.float32), key=key)
                mapped = server.map_tokens(net, tokens)
                error = ((mapped - truth) ** 2).reshape(len(mapped), -1).mean(axis=1)
                return np.exp(-error.astype(np.float64))
            return score

        def fit_reference(train: Samples, val: Samples, ref_seed: int):
            server = model.server()
            pairs = scheme.training_pairs(train.inputs, np.asarray(train.truth, np.float32),
                                          key=key)
            return scorer(server.train([pairs], seed=ref_seed), server)

        return MembershipTarget(
            domain="encoded (image, mask) pairs",
            threat="the server, or anyone it lets query the mapping network, holding encoded "
                   "images and encoded masks of the images asked about",
            splits=candidate_splits(data, truth="masks"),
            score=scorer(model.net, model.server()), fit_reference=fit_reference)

    def describe(self, section: dict[str, Any], row: dict[str, Any]) -> list[str]:
        wrong = section.get("wrong_key_masks")
        if not (wrong and row.get("utility")):
            return []
        return [f"masks decoded by the client with its key reach Dice "
                f"{row['utility']['dice']:.3f}; with another key, {wrong['dice']:.3f}"]


class EncodedSegmentationOwner(ExchangeOwner):
    """The client: encode (the release), decode the server's encoded masks."""

    def _view_bytes(self) -> float:
        n = len(self.data.split("test"))
        return float(self.release.arrays["test"]["view"][:n].nbytes / max(1, n))

    def receive(self, message):
        self.answer = message
        return super().receive(message)

    def section(self, *, wrong_key) -> dict[str, Any]:
        """``wrong_key_masks``: a client who decodes the server's predictions for the
        unflipped copy with a key of its own."""
        from medveil.metrics import segmentation_metrics

        test = self.data.split("test")
        first_copy = self.answer.arrays["test"]["encoded_masks"][:len(test)]
        return {"wrong_key_masks": segmentation_metrics(
            self.scheme.decode_masks_bypassing_check(first_copy, wrong_key), test.masks)}
