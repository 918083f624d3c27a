"""Batch mode: one image per slot, every feature a ciphertext (throughput, not latency).

With 4096 slots a ciphertext carries one pixel of 4096 images, so every layer
is a sum of ciphertext-times-scalar products and no rotation is needed at all;
its cost is shared by all images in the batch. Used for the throughput figure
and for any network depth the modulus chain allows.
"""

from __future__ import annotations

import functools
import mmap
import os
import resource
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from medveil.errors import ConfigError, DataError
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


def encrypt_batch(owner: OwnerKeys, images: np.ndarray, *, workers: int = 1,
                  streamed: bool = False) -> list[Any] | SharedPixels | StreamedPixels:
    """One ciphertext per pixel, image ``i`` in slot ``i`` (at most ``slots`` images).

    ``workers`` > 1 (where ciphertexts can be read in place): the pixels are encrypted
    by that many forked processes straight into shared memory (:class:`SharedPixels`),
    which :meth:`RNSBatchEvaluator.run` reads; each process draws its own encryption
    randomness (SEAL seeds every encryption from the system's random device).
    ``streamed``: nothing is encrypted yet; the pixels are encrypted as the first layer
    reads them (:class:`StreamedPixels`), for batches whose ciphertexts do not fit in
    memory at once (128x128 images at N = 16384: 16384 ciphertexts, 34 GB).
    """
    from medveil.he import rns

    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    if len(flat) > owner.params.slots:
        raise DataError(f"a batch holds at most {owner.params.slots} images, got {len(flat)}")
    pixels = np.zeros((flat.shape[1], owner.params.slots))  # one contiguous row per pixel
    pixels[:, :len(flat)] = flat.T
    if streamed:
        if not rns.readable(owner.public):
            raise ConfigError("a streamed batch is read in place by the residue engine, "
                              "which this TenSEAL build does not allow; leave streamed off")
        return StreamedPixels(owner.encrypt, pixels)
    if workers <= 1 or not rns.readable(owner.public):
        return [owner.encrypt(row) for row in pixels]
    template = owner.encrypt(pixels[0])
    residues = _array((len(pixels), *rns.ciphertext_view(template).shape), np.uint64,
                      shared=True)

    def share(first: int) -> None:
        for j in range(first, len(pixels), workers):
            ct = owner.encrypt(pixels[j])  # alive while its residues are copied
            residues[j] = rns.ciphertext_view(ct)

    _in_workers([functools.partial(share, w) for w in range(workers)])
    return SharedPixels(residues, template)


class SharedPixels:
    """A client's batch as one residue array in shared memory (row ``j``: pixel ``j``'s
    ciphertext, ``(size, primes, N)``) and a ciphertext at its level and scale: what
    forked processes write and read without copying ciphertext objects."""

    def __init__(self, residues: np.ndarray, template: Any) -> None:
        self.residues, self.template = residues, template

    def __len__(self) -> int:
        return len(self.residues)

    def release(self) -> None:
        """Drop the residues (the shared memory is freed with its last reference)."""
        self.residues = np.empty((0, *self.residues.shape[1:]), dtype=self.residues.dtype)


class StreamedPixels:
    """A client's batch encrypted as the first layer reads it: the client's end of a
    stream that sends each pixel's ciphertext when the processor's first layer asks
    for it, so no more than one group's ciphertexts exist at a time. Each read draws
    fresh encryptions; the first layer of a patch network reads each pixel once (its
    groups' inputs are disjoint), an overlapping one re-encrypts shared pixels (the
    cost is counted, the result is the same to CKKS noise)."""

    def __init__(self, encrypt: Callable[[np.ndarray], Any], pixels: np.ndarray) -> None:
        self._encrypt, self._pixels = encrypt, pixels
        self.template = encrypt(pixels[0])
        self.encryptions = 0  # in this process (each forked worker counts its own)

    def __len__(self) -> int:
        return len(self._pixels)

    def residues(self, cols: np.ndarray) -> np.ndarray:
        """Pixels ``cols`` encrypted now, as residues ``(len(cols), size, primes, N)``."""
        from medveil.he import rns

        block = None
        for k, j in enumerate(cols):
            ct = self._encrypt(self._pixels[j])  # alive while its residues are copied
            self.encryptions += 1
            view = rns.ciphertext_view(ct)
            if block is None:
                block = np.empty((len(cols), *view.shape), dtype=view.dtype)
            block[k] = view
        return block


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

    #: How many processes :meth:`run` can share its work among (None: any).
    max_workers: int | None = 1

    def run(self, inputs: list[Any], *, consume: bool = False, workers: int = 1
            ) -> list[Any]:
        """Per-class ciphertexts of (scaled) logits, image ``i`` in slot ``i``;
        ``consume``: empty ``inputs`` once the first layer has read them; one process
        (``workers`` must be 1)."""
        if workers != 1:
            raise ConfigError(f"the SEAL-call batch engine runs in one process, not {workers}")
        x = inputs
        for depth, (weight, bias) in enumerate(self.layers):
            x = self._linear(x, weight, bias)
            if consume and depth == 0:
                inputs.clear()
            if depth < len(self.layers) - 1:
                x = self._square(x)
        return x


def decrypt_batch(owner: OwnerKeys, outputs: list[Any], count: int, output_scale: float
                  ) -> np.ndarray:
    return np.stack([owner.decrypt(ct)[:count] for ct in outputs], axis=1) / output_scale


class RNSBatchEvaluator(BatchEvaluator):
    """:class:`BatchEvaluator`'s network, its sums as exact residue matrix products.

    The same levels and the same result (to CKKS noise), much faster: every linear
    layer is a float64 BLAS product over the input ciphertexts' residues, one per
    group of outputs sharing their inputs (an output position of a convolution),
    exact and then reduced per prime (:mod:`medveil.he.rns`); SEAL does the rescaling,
    squaring and relinearisation. Two more savings: the first layer's outputs are
    kept as residues only (the next layer reads them, never SEAL), and the second
    layer's squares are neither relinearised nor rescaled: the layer after it sums
    them as 3-part ciphertexts and relinearises its few outputs once (relinearisation
    and rescaling are linear, so the order does not change the result beyond noise),
    rescaling twice. Output order and scales as :class:`BatchEvaluator`'s. The groups
    of the first two layers can be dealt to several forked processes (``run(...,
    workers=W)``): exact sums, so the same residues bit for bit.
    """

    #: Squares of layer 1 read by layer 2 per product (its inner dimension).
    LAYER2_BLOCK = 256
    max_workers = None

    def __init__(self, public: PublicContext, net: FoldedNet) -> None:
        from medveil.he import rns

        super().__init__(public, net)
        self.rns = rns
        # The first layer's outputs in (position, channel) order: a convolution's output
        # position then reads a few contiguous runs of the next layer's inputs.
        positions = net.conv_out ** 2
        order = (np.arange(net.channels)[None, :] * positions
                 + np.arange(positions)[:, None]).reshape(-1)
        (first, first_bias), (hidden, hidden_bias), *rest = self.layers
        self.layers = [(first[order], first_bias[order]), (hidden[:, order], hidden_bias), *rest]
        self.stats: dict[str, float] = {}

    @property
    def reads_each_pixel_once(self) -> bool:
        """Whether the first layer's groups read disjoint pixels (a patch network): then
        a streamed batch encrypts each pixel once, as an unstreamed one does."""
        cols = [c for _, c in self.rns.row_groups(self.layers[0][0])]
        read = np.concatenate(cols) if cols else np.empty(0, dtype=np.int64)
        return len(read) == len(np.unique(read))

    # -- helpers --------------------------------------------------------------------
    def _primes(self, ct: Any) -> list[int]:
        return self.rns.level_primes(self.public.ctx, ct.parms_id())

    def _residues(self, cts: list[Any], prime: int) -> np.ndarray:
        """One prime's residues of ``cts`` as float64 rows ``(len(cts), size * N)``."""
        return np.stack([self.rns.ciphertext_view(ct)[:, prime, :].reshape(-1)
                         for ct in cts]).view(np.int64).astype(np.float64)

    def _write(self, template: Any, rows: list[np.ndarray], constant: list[int],
               scale: float, primes: list[int]) -> Any:
        """A new ciphertext shaped as ``template`` (at the level of ``primes``) holding
        per-prime residue rows, plus a constant (reduced per prime) on its first part."""
        out = self.seal.Ciphertext()
        self.evaluator.negate(template, out)
        view = self.rns.ciphertext_view(out)
        for prime, residues in enumerate(rows):
            part = residues.reshape(view.shape[0], -1)
            part[0] += constant[prime]
            self.rns.reduce_mod(part, primes[prime])
            view[:, prime, :] = part.astype(np.int64).view(np.uint64)
        out.scale = scale
        return out

    def _group_weights(self, integer: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                       primes: list[int]) -> list[Any]:
        """A row group's integer weights cut for each prime's size (shared per size)."""
        block = integer[np.ix_(rows, cols)]
        cuts: dict[int, Any] = {}
        return [cuts.setdefault(q.bit_length(), self.rns.IntegerWeights.cut(block, q.bit_length()))
                for q in primes]

    @staticmethod
    def _constants(bias: np.ndarray, scale: float, primes: list[int]) -> list[list[int]]:
        values = [int(round(float(b) * scale)) for b in bias]
        return [[v % q for q in primes] for v in values]

    def _activate(self, ct: Any, *, relinearise: bool = True, rescale: bool = True) -> Any:
        ev = self.evaluator
        ev.rescale_to_next_inplace(ct)
        ev.square_inplace(ct)
        if relinearise:  # before rescaling, which divides the key-switching noise too
            ev.relinearize_inplace(ct, self.public.relin_keys)
        if rescale:
            ev.rescale_to_next_inplace(ct)
        return ct

    def _probe(self, template: Any, scale: float, primes: list[int], *,
               relinearise: bool = True, rescale: bool = True) -> Any:
        """``template`` rewritten at the layer's product scale and activated: the level,
        scale and shape every output of that layer will have (known before any worker
        starts; SEAL refuses an all-zero ciphertext)."""
        rows = list(self.rns.ciphertext_view(template).astype(np.float64).transpose(1, 0, 2))
        return self._activate(self._write(template, rows, [0] * len(primes), scale, primes),
                              relinearise=relinearise, rescale=rescale)

    def _layer(self, weight: np.ndarray, bias: np.ndarray, template: Any) -> _Layer:
        """A layer read from inputs shaped as ``template``: weights scaled so that one
        rescale after the product brings it back to the context's scale."""
        primes, scale = self._primes(template), template.scale
        w_scale = self.public.scale * primes[-1] / scale
        return _Layer(np.round(weight * w_scale),
                      self._constants(bias, scale * w_scale, primes), scale * w_scale, primes,
                      self.rns.row_groups(weight), template)

    def _input_block(self, inputs: list[Any] | SharedPixels | StreamedPixels,
                     cols: np.ndarray) -> np.ndarray:
        """The residues ``(len(cols), size, primes, N)`` of a group's input ciphertexts."""
        if isinstance(inputs, SharedPixels):
            return inputs.residues[cols]
        if isinstance(inputs, StreamedPixels):
            return inputs.residues(cols)
        return np.stack([self.rns.ciphertext_view(inputs[j]) for j in cols])

    # -- the network ----------------------------------------------------------------
    def run(self, inputs: list[Any] | SharedPixels | StreamedPixels, *, consume: bool = False,
            workers: int = 1) -> list[Any]:
        """Per-class ciphertexts of (scaled) logits, image ``i`` in slot ``i``.

        ``consume``: drop each input ciphertext once the first layer has read it (a full
        batch of 64x64 images is 8.6 GB of ciphertexts at N = 16384; a
        :class:`SharedPixels` batch is released after the first layer).
        ``workers``: the first two layers' output groups shared among this many forked
        processes (the same result, bit for bit: every sum is exact modular arithmetic);
        their intermediate residues live in shared memory.
        """
        if workers < 1:
            raise ConfigError(f"batch workers must be at least 1, got {workers}")
        delta, slots2 = self.public.scale, self.public.params.poly_modulus_degree
        started = time.perf_counter()
        (w0, b0), (w1, b1), (w2, b2), *rest = self.layers
        template0 = inputs[0] if isinstance(inputs, list) else inputs.template
        # Layer 0: each group of outputs from its own inputs; activated, kept as residues.
        layer0 = self._layer(w0, b0, template0)
        template1 = self._probe(template0, layer0.scale, layer0.primes)
        hidden_in = _array((len(self._primes(template1)), len(w0), 2 * slots2), np.float64,
                           shared=workers > 1)
        _in_workers([functools.partial(self._layer0, inputs, layer0, hidden_in, consume=consume,
                                       shard=(w, workers)) for w in range(workers)])
        if isinstance(inputs, SharedPixels) and consume:
            inputs.release()
        self.stats["layer0_s"] = time.perf_counter() - started
        # Layer 1 streamed into layer 2: each group's outputs are squared (no
        # relinearisation, no rescale) and summed into layer 2's accumulators at once.
        layer1 = self._layer(w1, b1, template1)
        template2 = self._probe(template1, layer1.scale, layer1.primes, relinearise=False,
                                rescale=False)
        primes2, scale2 = self._primes(template2), template2.scale
        w_scale2 = delta * primes2[-1] * primes2[-2] / scale2  # two rescales after
        integer2 = np.round(w2 * w_scale2)
        accumulators = _array((workers, len(primes2), len(w2), 3 * slots2), np.float64,
                              shared=workers > 1)
        _in_workers([functools.partial(self._layer1, hidden_in, layer1, integer2, primes2,
                                       accumulators[w], shard=(w, workers))
                     for w in range(workers)])
        del hidden_in
        summed = accumulators.sum(axis=0)  # each in [-q, 2q) per worker: far below 2^51
        del accumulators
        self.stats["layer1_s"] = time.perf_counter() - started - self.stats["layer0_s"]
        const2 = self._constants(b2, scale2 * w_scale2, primes2)
        x = []
        for row in range(len(w2)):
            ct = self._write(template2, list(summed[:, row]), const2[row], scale2 * w_scale2,
                             primes2)
            self.evaluator.relinearize_inplace(ct, self.public.relin_keys)
            self.evaluator.rescale_to_next_inplace(ct)
            self.evaluator.rescale_to_next_inplace(ct)
            x.append(ct)
        # Any further layers (the 7-level networks' output layer): few products, SEAL's.
        for weight, bias in rest:
            x = self._linear(self._square(x), weight, bias)
        self.stats["total_s"] = time.perf_counter() - started
        return x

    def _layer0(self, inputs: list[Any] | SharedPixels | StreamedPixels, layer: _Layer,
                hidden_in: np.ndarray,
                *, consume: bool, shard: tuple[int, int]) -> None:
        """The first layer's groups of one shard, activated, into ``hidden_in`` rows."""
        groups = layer.groups[shard[0]::shard[1]]
        if not groups:
            return
        readers = np.zeros(len(inputs), dtype=np.int64)
        for _, cols in groups:
            readers[cols] += 1
        consume = consume and isinstance(inputs, list)

        def products(rows: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
            cut = self._group_weights(layer.integer, rows, cols, layer.primes)
            block = self._input_block(inputs, cols)
            return [cut[i].matmul_mod(block[:, :, i, :].reshape(len(cols), -1).view(np.int64)
                                      .astype(np.float64), q, exact=False)
                    for i, q in enumerate(layer.primes)]

        # One thread computes the next group's products (BLAS and numpy release the
        # GIL) while this one runs SEAL (rescale, square, relinearise) on the current
        # group's outputs.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(products, *groups[0])
            for index, (rows, cols) in enumerate(groups):
                parts = pending.result()
                readers[cols] -= 1
                if consume:  # read by every group that needs them: SEAL may free them
                    for j in cols[readers[cols] == 0]:
                        inputs[j] = None
                if index + 1 < len(groups):
                    pending = pool.submit(products, *groups[index + 1])
                for k, row in enumerate(rows):
                    ct = self._activate(self._write(layer.template, [p[k] for p in parts],
                                                    layer.constants[row], layer.scale,
                                                    layer.primes))
                    view = self.rns.ciphertext_view(ct)
                    for i in range(len(hidden_in)):
                        hidden_in[i, row] = view[:, i, :].reshape(-1).view(np.int64)

    def _layer1(self, hidden_in: np.ndarray, layer: _Layer, integer2: np.ndarray,
                primes2: list[int], accumulators: np.ndarray, *, shard: tuple[int, int]
                ) -> None:
        """The second layer's groups of one shard, squared, summed into layer 2's
        ``accumulators`` (one per prime, left in [-q, 2q))."""
        groups = layer.groups[shard[0]::shard[1]]
        if not groups:
            return

        def products(rows: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
            cut = self._group_weights(layer.integer, rows, cols, layer.primes)
            runs = self.rns.support_runs(cols)
            return [cut[i].matmul_mod(hidden_in[i], q, runs, exact=False)
                    for i, q in enumerate(layer.primes)]

        buffered: list[tuple[np.ndarray, list[np.ndarray]]] = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(products, *groups[0])
            for index, (rows, _) in enumerate(groups):
                parts = pending.result()
                if index + 1 < len(groups):
                    pending = pool.submit(products, *groups[index + 1])
                squares = [self._activate(self._write(layer.template, [p[k] for p in parts],
                                                      layer.constants[row], layer.scale,
                                                      layer.primes),
                                          relinearise=False, rescale=False)
                           for k, row in enumerate(rows)]
                # Layer 2 reads the squares in blocks of a few groups: one product with a
                # deeper inner dimension instead of one per group (less memory traffic).
                buffered.append((rows, [self._residues(squares, i) for i in range(len(primes2))]))
                if sum(len(r) for r, _ in buffered) < self.LAYER2_BLOCK and \
                        index + 1 < len(groups):
                    continue
                block_rows = np.concatenate([r for r, _ in buffered])
                cut = self._group_weights(integer2, np.arange(len(integer2)), block_rows,
                                          primes2)
                for i, q in enumerate(primes2):
                    block = np.concatenate([parts_i[i] for _, parts_i in buffered])
                    accumulators[i] += cut[i].matmul_mod(block, q, exact=False)
                    self.rns.reduce_lazy(accumulators[i], q)
                buffered = []


@dataclass(frozen=True)
class _Layer:
    """One linear layer's integer weights, bias constants, product scale, the primes of
    its inputs' level, its row groups and a ciphertext shaped as its outputs."""

    integer: np.ndarray
    constants: list[list[int]]
    scale: float
    primes: list[int]
    groups: list[tuple[np.ndarray, np.ndarray]]
    template: Any


def _array(shape: tuple[int, ...], dtype: Any, *, shared: bool) -> np.ndarray:
    """A zeroed array, in memory shared with forked workers where ``shared``."""
    if not shared:
        return np.zeros(shape, dtype=dtype)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, size), dtype=dtype).reshape(shape)


def _with_limits(limits: Callable[..., Any], task: Callable[[], None]) -> Callable[[], None]:
    def limited() -> None:
        with limits(limits=1, user_api="blas"):
            task()
    return limited


def _in_workers(tasks: list[Callable[[], None]]) -> None:
    """Run the first task here and each other in a forked process (they share memory
    made by :func:`_array` only); raise if any fails. With several, each runs its BLAS
    products on one thread: the processes already fill the cores, and more threads than
    cores make OpenBLAS's waiting threads spin."""
    if len(tasks) > 1:
        from threadpoolctl import threadpool_limits

        tasks = [_with_limits(threadpool_limits, task) for task in tasks]
    children = []
    for task in tasks[1:]:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's exit status is checked below
            code = 1
            try:
                task()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    try:
        tasks[0]()
    finally:
        failed = [pid for pid in children
                  if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} batch worker process(es) failed (see stderr)")


BATCH_ENGINES = ("auto", "rns", "seal")


def batch_evaluator(public: PublicContext, net: FoldedNet, *, engine: str = "auto"
                    ) -> BatchEvaluator | RNSBatchEvaluator:
    """The batch-mode evaluator: ``rns`` (residue matrix products) where this TenSEAL
    build's ciphertexts can be read in place, else ``seal`` (one SEAL call per product)."""
    from medveil.he import rns

    if engine not in BATCH_ENGINES:
        raise ConfigError(f"unknown batch engine {engine!r}; choose one of "
                          f"{', '.join(BATCH_ENGINES)}")
    if engine == "auto":
        engine = "rns" if rns.readable(public) else "seal"
    return RNSBatchEvaluator(public, net) if engine == "rns" else BatchEvaluator(public, net)


def fits_in_memory(owner: OwnerKeys, pixels: int, *, share: float = 0.5) -> bool:
    """Whether ``pixels`` top-level ciphertexts take at most ``share`` of this machine's
    physical memory (else a batch is streamed: :class:`StreamedPixels`)."""
    from medveil.he import rns

    if not rns.readable(owner.public):
        return True  # only the residue engine can stream; the SEAL engine holds them all
    probe = owner.encrypt(np.zeros(owner.params.slots))
    one = rns.ciphertext_view(probe).nbytes
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return pixels * one <= share * memory


def measure_batch(owner: OwnerKeys, net: FoldedNet, images: np.ndarray, count: int, *,
                  engine: str = "auto", workers: int | None = None,
                  streamed: bool | None = None) -> dict[str, Any]:
    """Batch mode timed end to end (the benchmarks' figure): ``count`` images (repeated
    from ``images``, at most the slots) encrypted, evaluated and decrypted; milliseconds
    per image over the whole round trip, agreement and error against plaintext.
    ``workers``: processes for the client's encryption and the evaluation (default: one
    per CPU where the engine can share its work, else one). ``streamed``: the pixels
    are encrypted as the first layer reads them, so the encryption's time is inside the
    first layer's (``batch_encrypt_s`` is then only the setup); by default wherever the
    residue engine's first layer reads each pixel once (no encryption repeated, none of
    the shared pixel store's page faults: 17.7 against 23.7 ms per image for
    ``wide_pool`` at 64 px, docs/benchmarks.md) or the pixel ciphertexts would take
    more than half the memory."""
    count = min(count, owner.params.slots)
    batch = np.asarray(images)[np.arange(count) % len(images)]
    started = time.perf_counter()
    evaluator = batch_evaluator(owner.public, net, engine=engine)
    if streamed is None:
        choosing = time.perf_counter()
        streamed = isinstance(evaluator, RNSBatchEvaluator) and (
            evaluator.reads_each_pixel_once or not fits_in_memory(owner, batch[0].size))
        started += time.perf_counter() - choosing  # the choice is not part of the round trip
    if workers is None:
        workers = min(os.cpu_count() or 1, evaluator.max_workers or os.cpu_count() or 1)
    if streamed and not isinstance(evaluator, RNSBatchEvaluator):
        raise ConfigError(f"a streamed batch ({batch[0].size} pixel ciphertexts) is read by "
                          "the residue engine only: use engine rns or auto, or fewer pixels")
    cts = encrypt_batch(owner, batch, workers=workers, streamed=streamed)
    encrypted = time.perf_counter()
    outputs = evaluator.run(cts, consume=True, workers=workers)
    evaluated = time.perf_counter()
    logits = decrypt_batch(owner, outputs, count, net.output_scale)
    seconds = time.perf_counter() - started
    reference = net.forward(batch)
    return {"batch_images": count, "batch_engine": type(evaluator).__name__,
            "batch_workers": workers, "batch_streamed": streamed,
            "batch_ms_per_image": 1000 * seconds / count,
            "batch_encrypt_s": encrypted - started, "batch_eval_s": evaluated - encrypted,
            "batch_stages_s": getattr(evaluator, "stats", {}),
            "batch_argmax_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            "batch_max_abs_logit_error": float(np.abs(logits - reference).max()),
            "batch_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
