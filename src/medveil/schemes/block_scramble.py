"""Weak reference scheme: block-wise scrambling in the style of learnable image encryption.

Tanaka (2018) and Chuman, Sirichotedumrong, Kiya (2019) encrypt an image by
splitting it into M x M blocks and, with a key, (1) shuffling pixels inside each
block with one permutation shared by all blocks, (2) applying a negative-positive
transform (x -> 1 - x) to a keyed subset of blocks, and (3) permuting the block
positions. The scheme is known to be broken by jigsaw-puzzle solvers and by
inversion networks; medveil registers it only to show that its attacks bite.
"""

from __future__ import annotations

import numpy as np

from medveil.errors import ConfigError, DataError
from medveil.keys import Key
from medveil.schemes.base import Scheme, register


@register
class BlockScrambleScheme(Scheme):
    name = "block_scramble"
    invertible = True
    reference_only = True

    def __init__(self, *, block_size: int = 4, shuffle_pixels: bool = True,
                 negative_positive: bool = True, permute_blocks: bool = True) -> None:
        if int(block_size) < 1:
            raise ConfigError(f"block_size must be at least 1, got {block_size}")
        super().__init__(block_size=int(block_size), shuffle_pixels=bool(shuffle_pixels),
                         negative_positive=bool(negative_positive),
                         permute_blocks=bool(permute_blocks))

    def _blocks(self, images: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """(N, C, H, W) -> (N, C, blocks, M*M) and the grid shape."""
        m = self.params["block_size"]
        n, c, h, w = images.shape
        if h % m or w % m:
            raise DataError(f"block_scramble needs image sides divisible by block_size={m}, "
                            f"got {h}x{w}; resize with --size")
        grid = images.reshape(n, c, h // m, m, w // m, m).transpose(0, 1, 2, 4, 3, 5)
        return grid.reshape(n, c, (h // m) * (w // m), m * m), (n, c, h, w)

    def _unblocks(self, blocks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        m = self.params["block_size"]
        n, c, h, w = shape
        grid = blocks.reshape(n, c, h // m, w // m, m, m).transpose(0, 1, 2, 4, 3, 5)
        return grid.reshape(n, c, h, w)

    def _keys(self, key: Key, n_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Key material derived at each use, never stored.
        m2 = self.params["block_size"] ** 2
        pixel = key.stream("block_scramble/pixels").permutation(m2) \
            if self.params["shuffle_pixels"] else np.arange(m2)
        flip = key.stream(f"block_scramble/np/{n_blocks}").integers(2, n_blocks).astype(bool) \
            if self.params["negative_positive"] else np.zeros(n_blocks, bool)
        order = key.stream(f"block_scramble/blocks/{n_blocks}").permutation(n_blocks) \
            if self.params["permute_blocks"] else np.arange(n_blocks)
        return pixel, flip, order

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        blocks, shape = self._blocks(images)
        pixel, flip, order = self._keys(key, blocks.shape[2])
        blocks = blocks[..., pixel]
        blocks = np.where(flip[None, None, :, None], 1.0 - blocks, blocks)
        blocks = blocks[:, :, order]
        return np.ascontiguousarray(self._unblocks(blocks, shape), dtype=np.float32)

    def _recover(self, view: np.ndarray, *, key: Key) -> np.ndarray:
        blocks, shape = self._blocks(view.astype(np.float32))
        pixel, flip, order = self._keys(key, blocks.shape[2])
        blocks = blocks[:, :, np.argsort(order)]
        blocks = np.where(flip[None, None, :, None], 1.0 - blocks, blocks)
        blocks = blocks[..., np.argsort(pixel)]
        return np.ascontiguousarray(self._unblocks(blocks, shape), dtype=np.float32)
