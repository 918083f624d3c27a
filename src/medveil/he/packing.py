"""Single-image slot packing of a folded HE CNN, and its evaluation on any backend.

One image's evaluation uses a handful of rotations instead of the per-output
rotations of a generic matrix-vector product:

* **first layer (client-packed convolution).** The client lays its im2col windows
  out as ``G`` ciphertexts: slot ``kk * p + c_local * P + pos`` holds kernel
  element ``g * R + kk`` of window ``pos`` (repeated for the ``cps`` channels of a
  segment). The server multiplies by the weights of each channel segment, adds the
  ``G`` products, and folds the ``R`` kernel groups together with ``log2(R)``
  cyclic rotations by multiples of ``p``: the segment's outputs come out
  *replicated* with period ``p`` across all slots, for free.
* **hidden layer (replicated vector -> block starts).** With ``m`` outputs and a
  block size ``B`` (a power of two up to ``slots / next_pow2(m)``, the cheapest
  for this layer: the largest for a dense layer, 1 for a convolution, which then
  runs *in place*), output ``a`` owns slots ``a*B .. a*B+B-1``.
  ``Z = sum_s sum_g rot(v_s, g*B) * P_{s,g}`` puts every input of output ``a``
  in its block exactly once; ``log2(B)`` rotations sum each block into slot
  ``a*B``. The ``g`` rotations are split baby-step / giant-step.
* **final layer (masked shift + cyclic sum).** ``Y = sum_k rot(h * M_k, -k)``
  with ``M_k[a*B] = W[k, a]`` (zero elsewhere, which also clears the hidden
  layer's partial sums); ``log2(slots / B)`` rotations by multiples of ``B`` sum
  the blocks, leaving logit ``k`` in slot ``k``.

The same ``evaluate_packed`` runs on :class:`NumpyBackend` (exact arithmetic;
tests the packing) and on the CKKS backend, so what is tested is what runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from medveil.errors import ConfigError
from medveil.he.nets import FoldedNet


def _made(vec: np.ndarray | None) -> bool:
    """Whether the evaluation makes a product: its vector is unknown (an encrypted
    model's weightless plan) or not all zeros."""
    return vec is None or bool(np.any(vec))


#: A product the plan does not hold: its vector is all zeros, so it is not made.
_NONE = np.zeros(1)


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def _rot(vec: np.ndarray, step: int) -> np.ndarray:
    """Left rotation, the convention of SEAL's ``rotate_vector``."""
    return np.roll(vec, -step)


@dataclass
class DenseStage:
    """A middle layer: one ciphertext whose inputs sit at block starts of the layer
    before (``x_a`` in slot ``a * in_block``), multiplied baby-step / giant-step into
    blocks of its own (output ``a`` summed into slot ``a * block``)."""

    block: int
    baby: int
    giant: int
    vectors: dict[tuple[int, int], np.ndarray]  # (baby, giant) -> vector
    bias: np.ndarray | None


@dataclass
class PackedPlan:
    """Every plaintext vector and rotation step of one folded network."""

    slots: int
    cps: int  # channels per segment of the first layer's output
    p: int  # segment period
    segments: int
    groups: int  # client ciphertexts per image (G)
    per_group: int  # kernel elements per client ciphertext (R)
    block: int  # hidden layer block size (B)
    baby: int
    giant: int
    first: list[list[np.ndarray]]  # [segment][group]
    first_bias: list[np.ndarray]  # [segment]
    hidden: dict[tuple[int, int, int], np.ndarray]  # (segment, baby, giant) -> vector
    hidden_bias: np.ndarray
    final: list[np.ndarray]  # [class]
    final_bias: np.ndarray
    num_classes: int
    output_scale: float
    net: FoldedNet
    middle: list[DenseStage] = field(default_factory=list)

    @property
    def out_block(self) -> int:
        """The block size of the last dense layer before the output layer."""
        return self.middle[-1].block if self.middle else self.block

    @property
    def rotation_steps(self) -> list[int]:
        """The only rotations the evaluation uses (keys are made for these alone)."""
        steps = {self.p * (1 << j) for j in range(int(math.log2(self.per_group)))}
        stages = [(self.block, self.baby, [(g1, g2) for (_, g1, g2), v in self.hidden.items()
                                           if _made(v)])]
        stages += [(m.block, m.baby, [g for g, v in m.vectors.items() if _made(v)])
                   for m in self.middle]
        for block, baby, used in stages:  # the steps of products the evaluation makes
            steps |= {g1 * block for g1, _ in used if g1}
            steps |= {baby * g2 * block for _, g2 in used if g2}
            steps |= {1 << j for j in range(int(math.log2(block)))}
        steps |= {-k for k in range(1, self.num_classes)}
        steps |= {self.out_block * (1 << j)
                  for j in range(int(math.log2(self.slots // self.out_block)))}
        return sorted(s % self.slots if s < 0 else s for s in steps if s % self.slots)

    def pack_image(self, image: np.ndarray) -> list[np.ndarray]:
        """The client's ``G`` slot vectors for one ``(H, W)`` image."""
        net = self.net
        cols = net.im2col(np.asarray(image, dtype=np.float64).reshape(net.image_size,
                                                                        net.image_size))
        positions, kernel = cols.shape
        out = []
        for g in range(self.groups):
            vec = np.zeros(self.slots)
            for kk in range(self.per_group):
                k = g * self.per_group + kk
                if k >= kernel:
                    break
                for cl in range(self.cps):
                    start = kk * self.p + cl * positions
                    vec[start:start + positions] = cols[:, k]
            out.append(vec)
        return out

    def describe(self) -> dict[str, Any]:
        return {"slots": self.slots, "channels_per_segment": self.cps, "segment_period": self.p,
                "segments": self.segments, "client_ciphertexts": self.groups,
                "hidden_block": self.block, "baby_steps": self.baby, "giant_steps": self.giant,
                "middle_blocks": [m.block for m in self.middle],
                "rotation_keys": len(self.rotation_steps)}


def plan_network(net: FoldedNet, *, slots: int = 4096, channels_per_segment: int | None = None
                 ) -> PackedPlan:
    """Lay out ``net`` for single-image evaluation in ``slots`` slots.

    Args:
        channels_per_segment: how many first-layer channels share one replicated
            segment. More channels per segment means more client ciphertexts but
            fewer server rotations; ``None`` picks the cheapest
            (:func:`_choose_segments`). Each layer's block size is costed too
            (:func:`_choose_block`).
    """
    positions = net.conv_out ** 2
    kernel = net.kernel ** 2
    channels = net.channels
    if channels_per_segment is None:
        channels_per_segment = _choose_segments(net, slots=slots)
    cps = int(channels_per_segment)
    if cps < 1 or channels % cps:
        raise ConfigError(f"channels_per_segment must divide {channels}, got {cps}")
    p = _pow2(cps * positions)
    if p > slots:
        raise ConfigError(f"{cps} channels of {positions} positions do not fit {slots} slots; "
                          f"lower channels_per_segment")
    per_group = slots // p
    groups = math.ceil(kernel / per_group)
    segments = channels // cps
    w = net.first_weight.reshape(channels, kernel)
    first, first_bias = [], []
    for s in range(segments):
        row = []
        for g in range(groups):
            vec = np.zeros(slots)
            for kk in range(per_group):
                k = g * per_group + kk
                if k >= kernel:
                    break
                for cl in range(cps):
                    start = kk * p + cl * positions
                    vec[start:start + positions] = w[s * cps + cl, k]
            row.append(vec)
        first.append(row)
        bias = np.zeros(p)
        for cl in range(cps):
            bias[cl * positions:(cl + 1) * positions] = net.first_bias[s * cps + cl]
        first_bias.append(np.tile(bias, slots // p))

    in_segment, in_offset = _first_layout(channels, positions, cps)
    stages = [(net.hidden_weight, net.hidden_bias), *net.middle]
    built = []
    period = p
    for i, (weight, bias) in enumerate(stages):
        last = i == len(stages) - 1
        block, _ = _choose_block(weight, slots=slots, period=period, segment=in_segment,
                                 offset=in_offset, classes=net.num_classes if last else 0)
        vectors, baby, giant = _block_products(weight, slots=slots, period=period, block=block,
                                               segment=in_segment, offset=in_offset)
        stage_bias = np.zeros(slots)
        stage_bias[np.arange(weight.shape[0]) * block] = bias
        built.append((block, baby, giant, vectors, stage_bias))
        # the next layer reads this one's block starts, from one ciphertext, unreplicated
        count = weight.shape[0]
        in_segment, in_offset, period = np.zeros(count, dtype=int), np.arange(count) * block, slots
    (block, baby, giant, hidden, hidden_bias), *rest = built
    hidden_block = block
    middle = [DenseStage(b, bb, gg, {(g1, g2): v for (_, g1, g2), v in vec.items()}, bias)
              for b, bb, gg, vec, bias in rest]
    block = built[-1][0]  # _choose_block made it hold the classes
    m = stages[-1][0].shape[0]
    a_idx = np.arange(m)
    final = []
    for k in range(net.num_classes):
        vec = np.zeros(slots)
        vec[a_idx * block] = net.final_weight[k]
        final.append(vec)
    final_bias = np.zeros(slots)
    final_bias[:net.num_classes] = net.final_bias
    return PackedPlan(slots=slots, cps=cps, p=p, segments=segments, groups=groups,
                      per_group=per_group, block=hidden_block, baby=baby, giant=giant, first=first,
                      first_bias=first_bias, hidden=hidden, hidden_bias=hidden_bias, final=final,
                      final_bias=final_bias, num_classes=net.num_classes,
                      output_scale=net.output_scale, net=net, middle=middle)


def _rotation_count(used: set[tuple[int, int]], baby: int) -> int:
    """Baby-step rotations per input plus giant-step rotations for the products ``used``."""
    return len({(s, g % baby) for s, g in used if g % baby}) + \
        len({g // baby for _, g in used if g // baby})


def _cheapest_baby(used: set[tuple[int, int]], per_block: int) -> int:
    """The baby-step count (a power of two) that needs the fewest rotations, counting
    only the products made (a convolution's matrix has few non-zero diagonals)."""
    best, best_cost = 1, None
    baby = 1
    while baby <= per_block:
        cost = _rotation_count(used, baby)
        if best_cost is None or cost < best_cost:
            best, best_cost = baby, cost
        baby *= 2
    return best


#: A rotation costs about as much as this many plaintext products (N = 16384, this
#: machine: 12 ms against 1.3 ms); the block choice weighs the two with it.
ROTATION_PRODUCTS = 10


def _placements(weight: np.ndarray, *, period: int, block: int, segment: np.ndarray,
                offset: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each non-zero ``W[a, j]``: its input ciphertext ``s``, rotation index ``g``
    and slot in its output block ``b`` (see :func:`_block_products`)."""
    a, j = np.nonzero(weight)
    t = offset[j]
    per_block = period // block
    return a, j, segment[j], (t // block - a) % per_block, t % block


def _products_made(weight: np.ndarray, *, period: int, block: int, segment: np.ndarray,
                   offset: np.ndarray) -> tuple[tuple[np.ndarray, ...], set[tuple[int, int]], int]:
    """The placements, the ``(s, g)`` products they need and the cheapest baby step."""
    placed = _placements(weight, period=period, block=block, segment=segment, offset=offset)
    used = set(zip(placed[2].tolist(), placed[3].tolist(), strict=True))
    return placed, used, _cheapest_baby(used, period // block)


def _choose_block(weight: np.ndarray, *, slots: int, period: int, segment: np.ndarray,
                  offset: np.ndarray, classes: int = 0) -> tuple[int, float]:
    """The output block size (a power of two) with the cheapest evaluation, and its cost.

    A large block needs few products for a dense matrix and sums each block with
    ``log2(block)`` rotations; a convolution's sparse matrix needs few distinct
    rotation indices with block 1 (each output in one slot: every input rotated
    straight onto it) and no block sum. The cost counts the rotations (baby and
    giant steps of the products actually made, the block sum, and for the layer
    before the output layer the ``log2(slots / block)`` rotations that sum its
    blocks) and the products, a product weighing ``1 / ROTATION_PRODUCTS`` of a
    rotation. ``classes > 0`` marks the layer before the output layer, whose blocks
    must hold the logits.
    """
    m = weight.shape[0]
    if m > slots:
        raise ConfigError(f"a layer of {m} outputs does not fit one ciphertext of {slots} "
                          "slots; use larger CKKS parameters or a narrower network")
    largest = min(slots // _pow2(m), period)
    smallest = _pow2(classes) if classes else 1
    if largest < smallest:
        raise ConfigError(f"{classes} classes do not fit hidden blocks of {largest} slots")
    best, best_cost = largest, None
    block = smallest
    while block <= largest:
        _, used, baby = _products_made(weight, period=period, block=block, segment=segment,
                                       offset=offset)
        rotations = _rotation_count(used, baby) + int(math.log2(block))
        if classes:
            rotations += int(math.log2(slots // block))
        cost = rotations + len(used) / ROTATION_PRODUCTS
        if best_cost is None or cost < best_cost:
            best, best_cost = block, cost
        block *= 2
    return best, best_cost


def _first_layout(channels: int, positions: int, cps: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each first-layer output (torch order: channel, position) sits: its segment
    ciphertext and its offset within the segment's period."""
    channel, pos = np.divmod(np.arange(channels * positions), positions)
    return channel // cps, (channel % cps) * positions + pos


#: Encrypting and sending one more client ciphertext costs about as much as this many
#: server rotations (N = 16384 here: 10 ms to encrypt against 9 ms a rotation, and
#: about 1 MiB more on the wire).
CLIENT_CIPHERTEXT_ROTATIONS = 2


def _choose_segments(net: FoldedNet, *, slots: int) -> int:
    """Channels per segment of the first layer's output, costed like the block choice.

    More channels per segment means fewer segments (fewer rotations in the first and
    hidden layers) but more client ciphertexts (each holds fewer kernel groups); the
    cost adds the first layer's rotations and products, the hidden layer's
    cheapest block (:func:`_choose_block`) and ``CLIENT_CIPHERTEXT_ROTATIONS`` per
    client ciphertext.
    """
    positions, kernel, channels = net.conv_out ** 2, net.kernel ** 2, net.channels
    best, best_cost = 1, None
    for cps in range(1, channels + 1):
        p = _pow2(cps * positions)
        if channels % cps or p > slots:
            continue
        per_group = slots // p
        groups, segments = math.ceil(kernel / per_group), channels // cps
        segment, offset = _first_layout(channels, positions, cps)
        try:
            _, hidden = _choose_block(net.hidden_weight, slots=slots, period=p, segment=segment,
                                      offset=offset, classes=0 if net.middle else net.num_classes)
        except ConfigError:  # the classes do not fit this period's blocks
            continue
        cost = segments * (math.log2(per_group) + groups / ROTATION_PRODUCTS) + hidden + \
            groups * CLIENT_CIPHERTEXT_ROTATIONS
        if best_cost is None or cost < best_cost:
            best, best_cost = cps, cost
    return best


def _block_products(weight: np.ndarray, *, slots: int, period: int, block: int,
                    segment: np.ndarray, offset: np.ndarray
                    ) -> tuple[dict[tuple[int, int, int], np.ndarray], int, int]:
    """The weight vectors of a (replicated) input -> block-start output product, split
    baby-step / giant-step; only the non-zero ones (a missing vector is all zeros).

    Input feature ``j`` sits in ciphertext ``segment[j]`` at ``offset[j]`` (within
    ``period``, repeated with it); output ``a`` owns slots ``a*block ..
    a*block+block-1``. ``Z = sum_s sum_g rot(v_s, g*block) * P_{s,g}`` puts every
    input of output ``a`` in its block exactly once: input offset ``t`` lands in
    slot ``b = t mod block`` of the block of ``a`` under ``g = (t // block - a) mod
    (period / block)``.
    """
    (a, j, s, g, b), used, baby = _products_made(weight, period=period, block=block,
                                                 segment=segment, offset=offset)
    giant = max(1, (period // block) // baby)
    values = weight[a, j]
    vectors: dict[tuple[int, int, int], np.ndarray] = {}
    for key in sorted(used):
        pick = (s == key[0]) & (g == key[1])
        vec = np.zeros(slots)
        vec[a[pick] * block + b[pick]] = values[pick]
        g1, g2 = key[1] % baby, key[1] // baby
        vectors[(key[0], g1, g2)] = np.roll(vec, baby * g2 * block)
    return vectors, baby, giant


class Backend(Protocol):
    """The handful of operations the packed evaluation needs."""

    def mul_weight(self, ct: Any, name: Any, vec: np.ndarray) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def finish_products(self, ct: Any) -> Any: ...  # relinearise if needed, rescale
    def add_bias(self, ct: Any, name: Any, vec: np.ndarray) -> Any: ...
    def rotate(self, ct: Any, step: int) -> Any: ...
    def square(self, ct: Any) -> Any: ...


def _sum(backend: Backend, items: list[Any]) -> Any:
    total = items[0]
    for item in items[1:]:
        total = backend.add(total, item)
    return total


def evaluate_packed(plan: PackedPlan, inputs: list[Any], backend: Backend) -> Any:
    """Run the packed network on one image's ``G`` (encrypted) slot vectors.

    Returns the backend's result holding logit ``k`` (times ``output_scale``) in slot ``k``.
    """
    segments = []
    for s in range(plan.segments):
        acc = _sum(backend, [backend.mul_weight(x, ("first", s, g), plan.first[s][g])
                             for g, x in enumerate(inputs)])
        acc = backend.finish_products(acc)
        shift = plan.p
        while shift < plan.slots:
            acc = backend.add(acc, backend.rotate(acc, shift))
            shift *= 2
        acc = backend.add_bias(acc, ("first_bias", s), plan.first_bias[s])
        segments.append(backend.square(acc))

    hidden = _block_stage(backend, segments, plan.block, plan.baby, plan.giant,
                          lambda s, g1, g2: (("hidden", s, g1, g2),
                                             plan.hidden.get((s, g1, g2), _NONE)),
                          (("hidden_bias",), plan.hidden_bias))
    for i, stage in enumerate(plan.middle):
        hidden = _block_stage(backend, [hidden], stage.block, stage.baby, stage.giant,
                              lambda s, g1, g2, i=i, stage=stage: (
                                  ("middle", i, g1, g2), stage.vectors.get((g1, g2), _NONE)),
                              (("middle_bias", i), stage.bias))

    shifted = []
    for k in range(plan.num_classes):
        term = backend.finish_products(backend.mul_weight(hidden, ("final", k), plan.final[k]))
        shifted.append(term if k == 0 else backend.rotate(term, -k))
    acc = _sum(backend, shifted)
    shift = plan.out_block
    while shift < plan.slots:
        acc = backend.add(acc, backend.rotate(acc, shift))
        shift *= 2
    return backend.add_bias(acc, ("final_bias",), plan.final_bias)


def _block_stage(backend: Backend, inputs: list[Any], block: int, baby: int, giant: int,
                 weight, bias: tuple[Any, Any]) -> Any:
    """One dense layer into block starts, then its square (see :func:`_block_products`).

    ``weight(s, g1, g2)`` gives the name and vector of a product; a product whose
    vector is known to be all zeros (a sparse convolution's empty diagonals) is
    skipped, and the baby-step rotations nothing uses are not made.
    """
    def needed(s: int, g1: int, g2: int) -> bool:
        return _made(weight(s, g1, g2)[1])

    babies = [{g1: v if g1 == 0 else backend.rotate(v, g1 * block)
               for g1 in range(baby) if any(needed(s, g1, g2) for g2 in range(giant))}
              for s, v in enumerate(inputs)]
    giants = []
    for g2 in range(giant):
        terms = [backend.mul_weight(babies[s][g1], *weight(s, g1, g2))
                 for s in range(len(inputs)) for g1 in range(baby) if needed(s, g1, g2)]
        if not terms:
            continue
        part = backend.finish_products(_sum(backend, terms))
        giants.append(part if g2 == 0 else backend.rotate(part, baby * g2 * block))
    acc = _sum(backend, giants)
    shift = 1
    while shift < block:
        acc = backend.add(acc, backend.rotate(acc, shift))
        shift *= 2
    return backend.square(backend.add_bias(acc, *bias))


class NumpyBackend:
    """Exact float64 slot arithmetic: the packing's reference implementation."""

    def __init__(self) -> None:
        self.rotations = 0

    def mul_weight(self, ct, name, vec):
        return ct * vec

    def add(self, a, b):
        return a + b

    def finish_products(self, ct):
        return ct

    def add_bias(self, ct, name, vec):
        return ct + vec

    def rotate(self, ct, step):
        self.rotations += 1
        return _rot(ct, step)

    def square(self, ct):
        return ct * ct


def simulate(plan: PackedPlan, images: np.ndarray) -> np.ndarray:
    """Logits of ``images`` through the packed layout in exact arithmetic."""
    out = []
    for image in np.asarray(images, dtype=np.float64).reshape(len(images), -1):
        result = evaluate_packed(plan, plan.pack_image(image), NumpyBackend())
        out.append(result[:plan.num_classes] / plan.output_scale)
    return np.stack(out)
