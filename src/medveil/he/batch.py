"""Batch mode: one image per slot, every feature a ciphertext (throughput, not latency).

With 4096 slots a ciphertext carries one pixel of 4096 images, so every layer
is a sum of ciphertext-times-scalar products and no rotation is needed at all;
its cost is shared by all images in the batch. Used for the throughput figure
and for any network depth the modulus chain allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medveil.errors import DataError
from medveil.he.ckks import OwnerKeys, PublicContext, sealapi
from medveil.he.nets import FoldedNet


def first_layer_matrix(net: FoldedNet) -> tuple[np.ndarray, np.ndarray]:
    """The convolution as a dense ``(C * P, H * W)`` matrix (mostly zeros) and its bias."""
    positions = net.conv_out ** 2
    index = net.im2col(np.arange(net.image_size ** 2).reshape(net.image_size, net.image_size))
    w = net.first_weight.reshape(net.channels, -1)
    dense = np.zeros((net.channels * positions, net.image_size ** 2))
    for c in range(net.channels):
        for pos in range(positions):
            dense[c * positions + pos, index[pos]] = w[c]
    return dense, np.repeat(net.first_bias, positions)


def encrypt_batch(owner: OwnerKeys, images: np.ndarray) -> list[Any]:
    """One ciphertext per pixel, image ``i`` in slot ``i`` (at most ``slots`` images)."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    if len(flat) > owner.params.slots:
        raise DataError(f"a batch holds at most {owner.params.slots} images, got {len(flat)}")
    padded = np.zeros((owner.params.slots, flat.shape[1]))
    padded[:len(flat)] = flat
    return [owner.encrypt(padded[:, j]) for j in range(flat.shape[1])]


class BatchEvaluator:
    """The folded network on per-feature ciphertexts (processor side, public context only)."""

    def __init__(self, public: PublicContext, net: FoldedNet) -> None:
        seal = sealapi()
        self.seal, self.public, self.net = seal, public, net
        self.evaluator = seal.Evaluator(public.ctx)
        self.encoder = seal.CKKSEncoder(public.ctx)
        first, first_bias = first_layer_matrix(net)
        self.layers = [(first, first_bias), (net.hidden_weight, net.hidden_bias), *net.middle,
                       (net.final_weight, net.final_bias)]

    def _linear(self, inputs: list[Any], weight: np.ndarray, bias: np.ndarray) -> list[Any]:
        seal, ev = self.seal, self.evaluator
        ref = inputs[0]
        data = self.public.ctx.get_context_data(ref.parms_id())
        q_last = float(data.parms().coeff_modulus()[-1].value())
        w_scale = self.public.scale * q_last / ref.scale
        parms_id = ref.parms_id()
        plain, prod = seal.Plaintext(), seal.Ciphertext()
        out = []
        for row, b in zip(weight, bias, strict=True):
            acc = None
            for i in np.flatnonzero(row):
                self.encoder.encode(float(row[i]), parms_id, w_scale, plain)
                if acc is None:
                    acc = seal.Ciphertext()
                    ev.multiply_plain(inputs[i], plain, acc)
                else:
                    ev.multiply_plain(inputs[i], plain, prod)
                    ev.add_inplace(acc, prod)
            if acc is None:  # an all-zero row: a zero product keeps the level and scale
                acc = seal.Ciphertext()
                self.encoder.encode(0.0, parms_id, w_scale, plain)
                ev.multiply_plain(ref, plain, acc)
            ev.rescale_to_next_inplace(acc)
            self.encoder.encode(float(b), acc.parms_id(), acc.scale, plain)
            ev.add_plain_inplace(acc, plain)
            out.append(acc)
        return out

    def _square(self, cts: list[Any]) -> list[Any]:
        for ct in cts:
            self.evaluator.square_inplace(ct)
            self.evaluator.relinearize_inplace(ct, self.public.relin_keys)
            self.evaluator.rescale_to_next_inplace(ct)
        return cts

    def run(self, inputs: list[Any]) -> list[Any]:
        """Per-class ciphertexts of (scaled) logits, image ``i`` in slot ``i``."""
        x = inputs
        for depth, (weight, bias) in enumerate(self.layers):
            x = self._linear(x, weight, bias)
            if depth < len(self.layers) - 1:
                x = self._square(x)
        return x


def decrypt_batch(owner: OwnerKeys, outputs: list[Any], count: int, output_scale: float
                  ) -> np.ndarray:
    return np.stack([owner.decrypt(ct)[:count] for ct in outputs], axis=1) / output_scale
