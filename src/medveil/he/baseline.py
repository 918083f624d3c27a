"""The TenSEAL tutorial pipeline, kept as the speed and accuracy reference point.

This is TenSEAL's "Encrypted evaluation on MNIST" tutorial network evaluated the
way the tutorial does it (``im2col_encoding``, ``conv2d_im2col`` per channel,
``pack_vectors``, ``square_``, ``mm``), with its parameters (N = 8192, moduli
[31, 26 x 6, 31], scale 2^26, all rotation keys). It runs our folded weights so
its answers can be compared with the plaintext model. It is deliberately not
fixed: the issue asks for its own agreement (it has a known accuracy problem).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medveil.errors import ConfigError, MissingDependencyError
from medveil.he.nets import FoldedNet


def _tenseal():
    try:
        import tenseal as ts
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("the ckks baseline needs TenSEAL: pip install "
                                     "'tenseal==0.3.18'") from exc
    return ts


class TutorialPipeline:
    """Client and server of the tutorial, in one object (as the tutorial has it)."""

    def __init__(self, net: FoldedNet) -> None:
        ts = _tenseal()
        if net.meta.get("architecture") != "tutorial":
            raise ConfigError("the TenSEAL tutorial pipeline only runs the tutorial network")
        self.ts = ts
        self.net = net
        self.context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192,
                                  coeff_mod_bit_sizes=[31, 26, 26, 26, 26, 26, 26, 31])
        self.context.global_scale = 2 ** 26
        self.context.generate_galois_keys()
        self.kernels = [k.tolist() for k in net.first_weight]
        self.conv_bias = net.first_bias.tolist()
        self.fc1 = net.hidden_weight.T.tolist()
        self.fc1_bias = net.hidden_bias.tolist()
        self.fc2 = net.final_weight.T.tolist()
        self.fc2_bias = net.final_bias.tolist()

    def encrypt(self, image: np.ndarray) -> tuple[Any, int]:
        k = self.net.kernel
        return self.ts.im2col_encoding(self.context, np.asarray(image, dtype=np.float64).reshape(
            self.net.image_size, self.net.image_size).tolist(), k, k, self.net.stride)

    def forward(self, enc_x: Any, windows: int) -> Any:
        channels = [enc_x.conv2d_im2col(kernel, windows) + bias
                    for kernel, bias in zip(self.kernels, self.conv_bias, strict=True)]
        enc = self.ts.CKKSVector.pack_vectors(channels)
        enc.square_()
        enc = enc.mm(self.fc1) + self.fc1_bias
        enc.square_()
        return enc.mm(self.fc2) + self.fc2_bias

    def logits(self, image: np.ndarray) -> np.ndarray:
        enc_x, windows = self.encrypt(image)
        return np.asarray(self.forward(enc_x, windows).decrypt()) / self.net.output_scale
