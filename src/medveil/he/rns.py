"""Ciphertexts as numpy arrays, and exact modular matrix products on them.

Batch mode (one image per slot, one ciphertext per feature) spends nearly all of
its time in ciphertext-times-scalar products: every feature of a layer is a
weighted sum of the layer's input ciphertexts. One SEAL call per product costs an
encode and a pass over both polynomials (about 1 ms at N = 16384, and the
``wide_pool`` network's 3x3 convolution alone has a million of them). The same
sums are matrix products over the ciphertexts' RNS residues: here they run as
float64 BLAS products that are *exact* (every partial sum stays below 2^53: the
integer weights are cut into balanced digits of a few bits, the inner dimension
into chunks), then are reduced modulo each prime. The ciphertexts stay SEAL's:
this module reads and writes their residues in place (the NTT form CKKS keeps),
and SEAL does the rest (rescaling, squaring, relinearisation).

A view of a ciphertext's residues is read through the pybind11 object that
tenseal.sealapi returns; :func:`ciphertext_view` checks the layout it relies on
(sizes, the first residue, a few more against ``dyn_array``) and raises
:class:`RNSLayoutError` where a build differs, so callers fall back to SEAL calls.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The pybind11 instance header (refcount, type) before its C++ object pointer, and the
#: 64-bit words of a ``seal::Ciphertext`` read below (SEAL 4: parms_id[4], is_ntt_form,
#: size, poly_modulus_degree, coeff_modulus_size, scale, correction_factor, then its
#: DynArray: pool handle[2], capacity, size, data pointer).
_PYBIND_VALUE_OFFSET = 16
_SIZE, _DEGREE, _PRIMES, _DATA_SIZE, _DATA_POINTER = 5, 6, 7, 13, 14
#: Float64 products are exact below 2^53.
_EXACT_BITS = 53


class RNSLayoutError(RuntimeError):
    """This TenSEAL build's ciphertext layout is not the one this module reads."""


def ciphertext_view(ct: Any) -> np.ndarray:
    """The residues of ``ct`` as a writable ``(size, primes, N)`` uint64 array (no copy).

    The array aliases SEAL's memory: keep ``ct`` alive and unresized while it is used.
    """
    size, degree, primes = ct.size(), ct.poly_modulus_degree(), ct.coeff_modulus_size()
    count = size * degree * primes
    obj = ctypes.c_void_p.from_address(id(ct) + _PYBIND_VALUE_OFFSET).value
    if not obj:
        raise RNSLayoutError("no C++ object behind the ciphertext")
    words = (ctypes.c_uint64 * (_DATA_POINTER + 1)).from_address(obj)
    if (words[_SIZE], words[_DEGREE], words[_PRIMES], words[_DATA_SIZE]) != (
            size, degree, primes, count) or not words[_DATA_POINTER]:
        raise RNSLayoutError("the ciphertext's fields are not where SEAL 4 keeps them")
    array = np.ctypeslib.as_array((ctypes.c_uint64 * count).from_address(words[_DATA_POINTER]))
    probe = ct.dyn_array()
    if int(array[0]) != ct.data() or any(int(array[i]) != probe.at(i)
                                         for i in (1, degree, count - 1)):
        raise RNSLayoutError("the ciphertext's residues are not where SEAL 4 keeps them")
    return array.reshape(size, primes, degree)


def level_primes(ctx: Any, parms_id: Any) -> list[int]:
    """The primes of the modulus chain at ``parms_id`` (the ciphertext's level)."""
    return [int(m.value()) for m in ctx.get_context_data(parms_id).parms().coeff_modulus()]


def reduce_mod(a: np.ndarray, q: int) -> np.ndarray:
    """``a mod q`` in [0, q) for float64 integers below 2^52 in magnitude (in place)."""
    reduce_lazy(a, q)
    a += q * (a < 0)
    a -= q * (a >= q)
    return a


def reduce_lazy(a: np.ndarray, q: int) -> np.ndarray:
    """``a`` minus a multiple of ``q``, into [-q, 2q) (in place): the quotient is
    rounded in float64 and may be one off, which the callers' bounds allow for."""
    quotient = np.multiply(a, 1.0 / q)
    np.floor(quotient, out=quotient)
    quotient *= q
    a -= quotient
    return a


@dataclass(frozen=True)
class IntegerWeights:
    """An integer matrix cut for exact float64 products with residues below ``2^prime_bits``.

    The inner dimension is taken in chunks of at most ``chunk`` terms and the weights
    are split into balanced base-``2^bits`` digits, ``W = sum_k D_k 2^(bits k)`` with
    ``|D_k| <= 2^(bits-1)``, so every digit product summed over a chunk stays below
    2^51 and every Horner step below 2^52.
    """

    stacked: np.ndarray  # the digits stacked (most significant first), each (n_out, n_in)
    count: int  # how many digits
    bits: int
    chunk: int

    @classmethod
    def cut(cls, weight: np.ndarray, prime_bits: int, *, chunk: int = 256) -> IntegerWeights:
        weight = np.asarray(weight, dtype=np.float64)
        chunk = max(2, min(chunk, weight.shape[1]))
        # residues kept lazily in [-q, 2q): one bit more than q itself
        bits = _EXACT_BITS - 2 - (prime_bits + 1) - math.ceil(math.log2(chunk))
        if bits < 2:
            raise ValueError(f"{prime_bits}-bit primes leave no room for exact products")
        base = float(2 ** bits)
        digits, rest = [], weight.copy()
        while True:
            high = np.round(rest / base)
            digits.append(rest - high * base)
            rest = high
            if not rest.any():
                break
        return cls(np.concatenate(digits[::-1], axis=0), len(digits), bits, chunk)

    def matmul_mod(self, x: np.ndarray, q: int, runs: list[slice] | None = None, *,
                   exact: bool = True) -> np.ndarray:
        """``(W @ x[support]) mod q`` for residues ``x`` (float64 rows in [-q, 2q)).

        ``runs``: the rows of ``x`` that W's columns stand for, as contiguous slices in
        order (a sparse row group's support), so no input is copied; default all rows.
        The products of up to ``chunk`` inner terms are summed before one reduction.
        ``exact=False`` leaves the result in [-q, 2q) (for sums that reduce later).
        """
        runs = runs or [slice(0, x.shape[0])]
        total = terms = None
        filled = column = 0
        for run in runs:
            start = run.start
            while start < run.stop:
                take = min(self.chunk - filled, run.stop - start)
                product = self.stacked[:, column:column + take] @ x[start:start + take]
                terms = product if terms is None else np.add(terms, product, out=terms)
                filled, column, start = filled + take, column + take, start + take
                if filled == self.chunk:
                    total, terms, filled = self._fold(terms, total, q), None, 0
        if terms is not None:
            total = self._fold(terms, total, q)
        return reduce_mod(total, q) if exact else total

    def _fold(self, terms: np.ndarray, total: np.ndarray | None, q: int) -> np.ndarray:
        """Horner over the digit blocks of one chunk's products, added to ``total``."""
        n_out = self.stacked.shape[0] // self.count
        acc = reduce_lazy(terms[:n_out], q)
        for k in range(1, self.count):
            acc *= float(2 ** self.bits)
            acc += terms[k * n_out:(k + 1) * n_out]
            reduce_lazy(acc, q)
        if total is None:
            return acc
        total += acc
        return reduce_lazy(total, q)


def support_runs(columns: np.ndarray) -> list[slice]:
    """Sorted column indices as maximal contiguous slices."""
    if not len(columns):
        return []
    breaks = np.flatnonzero(np.diff(columns) != 1) + 1
    return [slice(int(part[0]), int(part[-1]) + 1) for part in np.split(columns, breaks)]


def row_groups(weight: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows of a sparse matrix grouped by identical support: ``(rows, columns)`` pairs,
    so each group is one dense product (a convolution: one group per output position)."""
    mask = weight != 0
    packed = np.packbits(mask, axis=1)
    _, inverse = np.unique(packed, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return [(rows, np.flatnonzero(mask[rows[0]])) for rows in np.split(order, bounds)]


def readable(public: Any) -> bool:
    """Whether this build's ciphertexts can be read in place (a probe encryption)."""
    from medveil.he.ckks import sealapi

    seal = sealapi()
    encoder, plain, ct = seal.CKKSEncoder(public.ctx), seal.Plaintext(), seal.Ciphertext()
    encoder.encode(0.0, public.scale, plain)
    public.encryptor().encrypt(plain, ct)
    try:
        ciphertext_view(ct)
    except RNSLayoutError:
        return False
    return True
