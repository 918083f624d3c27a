"""Update (gradient) inversion by an honest-but-curious federated aggregator.

The aggregator sends a centre the global weights ``before``, gets ``after`` back and
knows the architecture (:class:`medveil.nets.classifier.SmallCNN`), so it can ask which
images would have produced that change. This is the attack of Geiping et al., "Inverting
Gradients - How easy is it to break privacy in federated learning?" (NeurIPS 2020):
optimise dummy images until the gradient they induce points the same way as the
observed update, with a total-variation prior. Its figure is the worst case a plain
federated round concedes to the server, and what secure aggregation or differential
privacy must push down.

The method, and the choices made where the paper leaves room:

* **Target.** The pseudo-gradient ``-(after - before)`` over the network's trainable
  parameters (``named_parameters``; buffers are ignored). One plain-SGD local step gives
  ``-lr * grad``, whose direction is the gradient's; cosine similarity ignores the
  scale, so the local learning rate need not be known. For a few small-lr steps it is
  an approximation (the sum of the gradients along the way).
* **Objective.** ``1 - <g, t> / (|g| |t|)`` with the dot product and both norms taken
  over *all parameter tensors together* (one global cosine, as the reference
  implementation's ``sim`` cost over all indices), where ``g`` is the gradient of the
  dummy batch's mean cross-entropy (``torch.autograd.grad(..., create_graph=True)``),
  plus ``tv * TV(x)`` with anisotropic TV = mean |dx| + mean |dy|. A global cosine
  weights each layer by its share of the update's norm, which is what the observation
  carries; a per-tensor sum would let the many tiny GroupNorm tensors dominate.
* **Optimiser.** Adam (``lr``) on the images with *signed* gradients (the gradient of
  the objective is replaced by its sign before each step), MultiStepLR x0.1 at 3/8, 5/8
  and 7/8 of the iterations, and the images clamped to the box [0, 1] after every step
  (medveil feeds networks raw [0, 1] pixels, so the box is the image domain itself).
* **Restarts.** ``restarts`` independent runs, each initialised uniformly in [0, 1]
  from a :class:`torch.Generator` made by :func:`medveil.seeds.torch_generator` (never
  the global RNG); the run with the lowest final objective (the full objective,
  cosine cost plus TV, evaluated after the last step) is returned.
* **Network mode.** ``eval()``: dropout off. The centre trained with dropout on, so the
  attacker's gradient differs from the observed one by the unknown dropout mask; the
  attack does not model it (neither does the reference). GroupNorm has no running
  statistics, so eval and train differ only in dropout.
* **Unknown labels.** For one image, the iDLG rule (Zhao et al. 2020): SmallCNN's
  classifier sees non-negative features (ReLU, max- and average-pooling), so the row of
  the last Linear layer's weight gradient that belongs to the true class is the only one
  with a negative sum; the row of the target with the most negative sum is taken. For
  more images, labels are optimised jointly with the images as soft logits
  (``n_images x classes``, randn from the same generator, Adam at the same rate,
  unsigned gradients; the loss is the soft cross-entropy ``-sum softmax(l) log p``), as
  DLG does; the reference shares one soft label across the batch, here every image has
  its own.
* **Scoring.** :func:`match_and_score` pairs reconstructions with the victims by the
  assignment of maximum total SSIM, since a batch gradient is invariant to the order of
  its images. Where the attacker assumed more images than there were, only the best
  assignment of as many reconstructions as victims is scored (the attacker may pick);
  where it assumed fewer, only that many victims are scored.
* **Other networks.** ``invert_update(..., build_net=...)`` builds another architecture
  from ``net_config``; the calibration test uses it for a network known to leak.

Measured when this was written (one thread, real 32 px chest X-ray crops, one image,
one train-mode SGD step at lr 0.01, floor: the mean of 16 public images):

* a network with a fully connected first layer (Geiping et al.'s Prop. 1 case): matched
  advantage 0.62-0.93 over eight victims in 300 iterations (0.5 s), labels granted or
  read by iDLG alike; a pure-noise update of the same norm: advantage about -1.1;
* the federated classifier, ``SmallCNN(width=8, norm="group")``: no leak. SSIM 0.10-0.24
  against floors of 0.47-0.62 (advantage -0.46 to -1.29) in 2000 iterations with
  ``tv=0.1``; 0.02-0.06 with the default ``tv=1e-4``; 0.32 after 8000 iterations. Its
  gradient is nearly blind to where things are (convolutions summed over positions,
  global average pooling) and the cosine objective is flat beyond a small neighbourhood
  of the true image (0.01 of pixel noise costs as much as another patient's image), so
  local search does not find it; width 32 reaches SSIM 0.4-0.65, still about the floor.
  A figure of "no leak" for SmallCNN is therefore this attack's at this budget, not a
  proof that the update hides the image.
* ``tv=1e-4`` (the paper's weight for normalised ImageNet) is almost no prior on [0, 1]
  pixels here; 1e-2 to 1e-1 did better on every network tried.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the seed purpose of the dummy images' (and soft labels') initialisation
PURPOSE = "attacks/update-inversion"


@dataclass
class ObservedUpdate:
    """What the aggregator sees of one centre's round (or of the sum under secure aggregation)."""

    net_config: dict[str, Any]          # SmallCNN kwargs
    before: dict[str, np.ndarray]       # global weights it sent
    after: dict[str, np.ndarray]        # weights it got back (or the weighted aggregate)
    image_shape: tuple[int, int, int]   # (C, H, W)
    n_images: int                       # images the attacker assumes in the batch
    labels: np.ndarray | None = None    # granted labels (strong attacker), or None


@dataclass(frozen=True)
class InversionConfig:
    """The attack's budget: Adam iterations per restart, restarts, TV weight, step size."""

    iterations: int = 2000
    restarts: int = 2
    tv: float = 1e-4
    lr: float = 0.1

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1:
            raise ValueError("iterations and restarts must be at least 1")
        if self.tv < 0 or self.lr <= 0:
            raise ValueError("tv must be non-negative and lr positive")


def total_variation(x: Any) -> Any:
    """Anisotropic TV of a (N, C, H, W) tensor: mean |dx| + mean |dy|. The image prior:
    real scans are piecewise smooth, the optimiser's noise is not."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + \
        (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def _network(update: ObservedUpdate, build: Callable[..., Any] | None) -> Any:
    """The network (SmallCNN unless ``build`` says otherwise) with the global weights, in
    eval mode (dropout off)."""
    import torch

    if build is None:
        from medveil.nets.classifier import SmallCNN

        build = SmallCNN
    with torch.random.fork_rng(devices=[]):  # construction draws an init we overwrite:
        net = build(**update.net_config)     # keep it off the caller's global RNG
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in update.before.items()})
    net.eval()
    return net


def _target(net: Any, update: ObservedUpdate) -> list[Any]:
    """``-(after - before)`` for each trainable parameter, in ``net.parameters()`` order."""
    import torch

    target = []
    for name, param in net.named_parameters():
        if name not in update.after or name not in update.before:
            raise ValueError(f"the update has no parameter {name!r}")
        delta = np.asarray(update.before[name], np.float64) - np.asarray(update.after[name],
                                                                         np.float64)
        if delta.shape != tuple(param.shape):
            raise ValueError(f"{name}: update shape {delta.shape} is not {tuple(param.shape)}")
        target.append(torch.as_tensor(delta, dtype=param.dtype))
    if not any(float(t.abs().max()) > 0 for t in target):
        raise ValueError("the update is zero: there is nothing to invert")
    return target


def _last_linear_weight(net: Any) -> int:
    """Index, in ``net.parameters()`` order, of the last Linear layer's weight."""
    from torch import nn

    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("the network has no Linear layer to read labels from")
    weight = linear[-1].weight
    return next(i for i, p in enumerate(net.parameters()) if p is weight)


def idlg_label(net: Any, target: list[Any]) -> int:
    """The iDLG label of a one-image update: the class whose row of the last Linear
    layer's weight gradient has the most negative sum (only the true class's row is
    negative when the features are non-negative).

    ``target`` is the pseudo-gradient ``-(after - before)`` as tensors in
    ``net.parameters()`` order (any positive multiple of the gradient will do)."""
    rows = target[_last_linear_weight(net)]
    return int(rows.sum(dim=1).argmin())


def _cosine_cost(grads: list[Any], target: list[Any], target_norm: Any) -> Any:
    """``1 - cos`` over all parameter tensors taken together."""
    import torch

    dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    return 1 - dot / (norm * target_norm + 1e-12)


def invert_update(update: ObservedUpdate, *, config: InversionConfig, seed: int,
                  build_net: Callable[..., Any] | None = None) -> np.ndarray:
    """Reconstruct the centre's batch from its update: ``(n_images, C, H, W)`` float32 in
    [0, 1], best of ``config.restarts`` runs by final objective (see the module's notes).

    Deterministic for a given ``seed`` (all randomness comes from a generator for
    ``attacks/update-inversion`` under it). ``build_net(**update.net_config)`` makes the
    network where it is not :class:`~medveil.nets.classifier.SmallCNN` (the default):
    calibration on an architecture known to leak, or another federated classifier.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    from medveil.seeds import torch_generator

    if update.n_images < 1:
        raise ValueError("n_images must be at least 1")
    if len(update.image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {update.image_shape}")
    net = _network(update, build_net)
    target = _target(net, update)
    target_norm = torch.sqrt(sum(t.pow(2).sum() for t in target))
    params = list(net.parameters())
    n = update.n_images
    num_classes = int(params[_last_linear_weight(net)].shape[0])

    hard: Any = None
    if update.labels is not None:
        labels = np.asarray(update.labels).reshape(-1).astype(np.int64)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} images")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes})")
        hard = torch.as_tensor(labels)
    elif n == 1:
        hard = torch.tensor([idlg_label(net, target)])

    gen = torch_generator(seed, PURPOSE)
    shape = (n, *update.image_shape)
    milestones = sorted({max(1, config.iterations * k // 8) for k in (3, 5, 7)})

    def objective(x: Any, soft: Any, *, graph: bool) -> Any:
        logits = net(x)
        if hard is not None:
            loss = F.cross_entropy(logits, hard)
        else:
            loss = -(soft.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()
        grads = torch.autograd.grad(loss, params, create_graph=graph)
        return _cosine_cost(grads, target, target_norm) + config.tv * total_variation(x)

    best_x, best_score = None, float("inf")
    for _ in range(config.restarts):
        x = torch.rand(shape, generator=gen).requires_grad_(True)
        soft = None
        variables = [x]
        if hard is None:
            soft = torch.randn((n, num_classes), generator=gen).requires_grad_(True)
            variables.append(soft)
        optimiser = torch.optim.Adam(variables, lr=config.lr)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones,
                                                        gamma=0.1)
        for _ in range(config.iterations):
            cost = objective(x, soft, graph=True)
            grads = torch.autograd.grad(cost, variables)  # never into the network's .grad
            x.grad = grads[0].sign()
            if soft is not None:
                soft.grad = grads[1]
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        score = float(objective(x, soft, graph=False).detach())
        score = score if math.isfinite(score) else float("inf")  # a diverged run never wins
        if best_x is None or score < best_score:
            best_x, best_score = x.detach().clone(), score
    return best_x.numpy().astype(np.float32)


def match_and_score(reconstructions: np.ndarray, truth: np.ndarray, *,
                    floor: float) -> dict[str, Any]:
    """Pair each reconstruction with a ground-truth image by maximum total SSIM and score.

    A batch's gradient does not know the order of its images, so any order the attack
    returns is as good as another: the pairing is the assignment
    (``scipy.optimize.linear_sum_assignment``) of maximum total SSIM over all pairs
    (:func:`medveil.metrics.per_image_ssim`). ``floor`` is the attacker's SSIM without
    the update (:func:`medveil.attacks.suite.attacker_floor`).

    Returns ``{"ssim", "psnr", "advantage", "floor_ssim", "images", "matched"}``:
    mean SSIM and PSNR over matched pairs, :func:`medveil.metrics.advantage` of that
    SSIM over ``floor``, the number of matched pairs, and for each reconstruction the
    index of its truth image (-1 where there were more reconstructions than victims).
    """
    from scipy.optimize import linear_sum_assignment

    from medveil.metrics import advantage, image_similarity, per_image_ssim

    recs = np.asarray(reconstructions, dtype=np.float32)
    true = np.asarray(truth, dtype=np.float32)
    if recs.ndim != 4 or true.ndim != 4 or recs.shape[1:] != true.shape[1:]:
        raise ValueError(f"need (N, C, H, W) arrays of one image shape, got {recs.shape} "
                         f"and {true.shape}")
    if not len(recs) or not len(true):
        raise ValueError("nothing to match")
    n_rec, n_true = len(recs), len(true)
    pairs = per_image_ssim(np.repeat(true, n_rec, axis=0), np.tile(recs, (n_true, 1, 1, 1)))
    ssim = np.asarray(pairs, dtype=np.float64).reshape(n_true, n_rec).T  # [rec, truth]
    rows, cols = linear_sum_assignment(ssim, maximize=True)
    matched = [-1] * n_rec
    for r, c in zip(rows, cols, strict=True):
        matched[int(r)] = int(c)
    mean_ssim = float(ssim[rows, cols].mean())
    psnr = image_similarity(true[cols], recs[rows])["psnr"]
    return {"ssim": mean_ssim, "psnr": float(psnr), "advantage": advantage(mean_ssim, floor),
            "floor_ssim": float(floor), "images": int(len(rows)), "matched": matched}
