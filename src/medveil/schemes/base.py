"""The one interface every protection scheme implements, and the scheme registry.

A scheme is owner-side code: ``fit`` learns anything it needs from the owner's
training images, ``protect`` turns images into the *view* that leaves the
owner, and ``recover`` gives images back to key holders where the scheme
allows it. The template methods here do the checks every scheme needs (input
shape and range, the key's fingerprint, fitted-ness) so that a scheme module
only writes the method itself.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Self

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import (
    ConfigError,
    DataError,
    KeyMismatchError,
    MedveilError,
    NotFittedError,
    NotInvertibleError,
)
from medveil.keys import Key


def image_digest(image: np.ndarray) -> str:
    """A short SHA-256 of an image's bytes, for keyed-stream purposes bound to the image.

    Binding a stream to the image (not to its position in a batch) gives the same
    view of the same image in any batch, and a different draw for every image.
    """
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:32]


class Scheme(ABC):
    """Base class of every protection scheme.

    Subclasses set the class facts below and implement ``_protect`` (and
    ``_fit`` / ``_recover`` / ``_state`` where they apply). Configuration is
    passed as keyword arguments and recorded in :attr:`params`.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    invertible: ClassVar[bool] = False
    keyed: ClassVar[bool] = True
    needs_fit: ClassVar[bool] = False
    #: The protocol the processor's task runs under (``medveil.protocols``): "view",
    #: "key_holder", "encrypted_inference" or "encoded_segmentation".
    protocol: ClassVar[str] = "view"
    #: Weak reference schemes that exist to show that the attacks bite.
    reference_only: ClassVar[bool] = False
    #: A bench row's wall time relative to plain's (the quick bench, docs/benchmarks.md):
    #: the executors start the longest rows first, so that workers finish together.
    bench_cost: ClassVar[float] = 1.0
    #: The same ratio where another budget's row differs from the quick bench's
    #: (``{"full": 1.8}``): the order of rows is the order of their expected lengths.
    bench_cost_by_budget: ClassVar[dict[str, float]] = {}
    #: Same key, same image -> same view. False for probabilistic encryption (ckks),
    #: where equal views would leak equal images.
    deterministic_views: ClassVar[bool] = True
    #: Invertible schemes: the SSIM a key holder's recovery must reach in the contract
    #: tests, which fit on 64 crops. Exact schemes recover almost perfectly; a learned
    #: lossy codec (primis) fitted on so few images reaches less, and its real figure
    #: is the bench's recovery row.
    contract_recovery_ssim: ClassVar[float] = 0.95
    #: Parameters the shared contract tests use: a smaller training budget where the
    #: defaults would take minutes per fit (the contract checks behaviour, not quality).
    contract_params: ClassVar[dict[str, Any]] = {}
    #: Parameters a budget that cuts schemes uses where the row does not name them, by
    #: the budget's ``scheme_cut`` (``quick``, ``demo``): the scheme's own training cut
    #: as that budget cuts the standard task's.
    cut_params: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The tasks a scheme serves; `--schemes all` skips the others for a data set.
    tasks: ClassVar[tuple[str, ...]] = ("classification", "segmentation")
    #: Whether ``protect`` makes a view that leaves the owner (False: the scheme's
    #: protocol keeps the images home, as federated training does).
    releases_view: ClassVar[bool] = True
    #: Schemes whose fit takes ``public`` images (same modality, not the owner's
    #: patients: a public or consented set), e.g. fesf's hosts.
    uses_public_images: ClassVar[bool] = False
    #: The owner's splits the fit reads: the training images, plus the validation split
    #: for schemes that select their network on it as the standard classifier does (ckks).
    fit_splits: ClassVar[tuple[str, ...]] = ("train",)

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.key_fingerprint: str | None = None
        self._fitted = False

    @classmethod
    def row_cost(cls, budget_mode: str) -> float:
        """A bench row's expected wall relative to plain's under the budget
        ``budget_mode``: ``bench_cost_by_budget`` for it, else the quick ``bench_cost``."""
        return cls.bench_cost_by_budget.get(budget_mode, cls.bench_cost)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({shown})"

    # -- the interface ------------------------------------------------------------
    def fit_data(self, data: ImageSet) -> ImageSet:
        """What of the owner's data set ``fit`` reads: the splits in ``fit_splits``."""
        return data.splits_subset(self.fit_splits)

    def fit(self, train: ImageSet, *, key: Key, seed: int = 0,
            public: ImageSet | None = None) -> Self:
        """Learn owner-side parameters from the owner's training images.

        ``public``: images of the same modality that are not the owner's patients, for
        schemes that take them (``uses_public_images``); the others ignore it.
        """
        self._bind(key)
        if self.uses_public_images:
            self._fit(train, key=key, seed=seed, public=public)
        else:
            self._fit(train, key=key, seed=seed)
        self._fitted = True
        return self

    def protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        """The view of ``images`` (N, C, H, W) float32 in [0, 1]: what leaves the owner."""
        images = self._check_images(images)
        self._require_fitted()
        self._bind(key)
        view = self._protect(images, key=key)
        shape, dtype = self.view_spec(images.shape[1:])
        if view.shape[1:] != tuple(shape) or view.dtype != np.dtype(dtype):
            raise AssertionError(f"{self.name} made a view {view.shape} {view.dtype}, "
                                 f"declared {shape} {dtype}")
        return view

    def recover(self, view: np.ndarray, *, key: Key) -> np.ndarray:
        """Images back from a view, for key holders of invertible schemes."""
        if not self.invertible:
            raise NotInvertibleError(
                f"scheme '{self.name}' is not invertible: nobody, key holder included, can get "
                "the images back from its views"
            )
        self._require_fitted()
        self._check_key(key)
        return self._recover(np.asarray(view), key=key)

    def recover_bypassing_check(self, view: np.ndarray, key: Key) -> np.ndarray:
        """What an attacker gets decoding with a key of its own, skipping the fingerprint
        check (the scorecard's ``wrong_key`` figure). Schemes whose decoding checks more
        than the fingerprint override this to skip those checks too."""
        return self._recover(np.asarray(view), key=key)

    def extra_attacks(self, view: np.ndarray, images: np.ndarray, *,
                      leaked_views: np.ndarray, leaked_images: np.ndarray, budget: Any,
                      seed: int) -> dict[str, Any]:
        """Attacks only this scheme's view invites (figures keyed by attack name).

        ``view``/``images`` are the victims; ``leaked_*`` the same known pairs the
        shared known-plaintext attacker gets, and ``budget`` its ``AttackBudget``. The
        bench adds the figures to the row's ``attacks`` beside the shared suite; most
        schemes have none.
        """
        return {}

    def attack_inverters(self) -> dict[str, Callable[..., Any]]:
        """Known-plaintext inverters this scheme's public view layout invites, by name.

        Each ``fit(views, images, *, budget, seed)`` returns an object with
        ``invert(views) -> images``. The shared inverter fits them beside its own and
        keeps whichever scores best on the attacker's held-out pairs, so a stronger
        scheme-specific reconstruction also feeds re-identification.
        """
        return {}

    def view_as_image(self, view: np.ndarray) -> np.ndarray | None:
        """How a reader would display a view, (N, C, h, w) in [0, 1], for the ``visual``
        attack; None where there is no such picture.

        An image-shaped view is its own picture; schemes whose views are codes or
        tokens override this when a reader could still draw them as an image.
        """
        view = np.asarray(view)
        return view if view.ndim == 4 and view.dtype == np.float32 else None

    def view_spec(self, image_shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        """Shape (without N) and dtype of the view of images shaped ``image_shape``."""
        return tuple(image_shape), "float32"

    def state_dict(self) -> dict[str, Any]:
        """Owner-side learned parameters; never key bytes or key-derived material."""
        return {
            "scheme": self.name,
            "version": self.version,
            "params": dict(self.params),
            "key_fingerprint": self.key_fingerprint,
            "state": self._state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> Self:
        if state.get("scheme") != self.name:
            raise ConfigError(f"state is for scheme '{state.get('scheme')}', not '{self.name}'")
        self.params = dict(state.get("params", {}))
        self.key_fingerprint = state.get("key_fingerprint")
        self._load_state(state.get("state", {}))
        self._fitted = True
        return self

    # -- for subclasses -----------------------------------------------------------
    def _fit(self, train: ImageSet, *, key: Key, seed: int) -> None:  # noqa: B027
        """Default: nothing to learn."""

    @abstractmethod
    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray: ...

    def _recover(self, view: np.ndarray, *, key: Key) -> np.ndarray:
        raise NotInvertibleError(f"scheme '{self.name}' has no recovery")

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Default: nothing was learned."""

    # -- checks -------------------------------------------------------------------
    def _bind(self, key: Key) -> None:
        if not self.keyed:
            return
        if not isinstance(key, Key):
            raise ConfigError(f"scheme '{self.name}' needs a medveil Key (see `medveil keygen`)")
        if self.key_fingerprint is None:
            self.key_fingerprint = key.fingerprint
        else:
            self._check_key(key)

    def _check_key(self, key: Key) -> None:
        if not self.keyed:
            return
        if self.key_fingerprint is not None and key.fingerprint != self.key_fingerprint:
            raise KeyMismatchError(
                f"wrong key for this '{self.name}' instance: it was made with key "
                f"{self.key_fingerprint[:12]}..., not {key.fingerprint[:12]}...; "
                "use the key file it was fitted with"
            )

    def _require_fitted(self) -> None:
        if self.needs_fit and not self._fitted:
            raise NotFittedError(
                f"scheme '{self.name}' must be fitted on the owner's training images first "
                "(call fit, or use `medveil protect`, which fits)"
            )

    @staticmethod
    def _check_images(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4:
            raise DataError(f"images must be shaped (N, C, H, W), got {images.shape}")
        images = images.astype(np.float32, copy=False)
        if not np.isfinite(images).all():
            raise DataError("images contain NaN or infinite pixels; clean them first")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise DataError("images must be scaled to [0, 1]; read them with medveil.data")
        return images


# ----------------------------------------------------------------------------- registry
SCHEMES: dict[str, type[Scheme]] = {}


def register(cls: type[Scheme]) -> type[Scheme]:
    """Class decorator: make a scheme available by its ``name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} has no name")
    if name in SCHEMES and SCHEMES[name] is not cls:
        raise ValueError(f"scheme name '{name}' is already registered")
    if not isinstance(getattr(cls, "protocol", None), str):
        raise ValueError(f"{cls.__name__}.protocol must name a protocol")
    _check_protocol_capabilities(cls)
    SCHEMES[name] = cls
    return cls


def _allowed_types(hint: Any) -> tuple[Any, ...] | None:
    """The plain types a parameter's annotation admits (None: anything)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        found: list[Any] = []
        for arg in typing.get_args(hint):
            allowed = _allowed_types(arg)
            if allowed is None:
                return None
            found += allowed
        return tuple(found)
    if origin in (tuple, list):
        return (tuple, list)
    if hint in (int, float, bool, str, type(None)):
        return (hint,)
    return None


def _fits(value: Any, allowed: tuple[Any, ...]) -> bool:
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed and math.isfinite(value)
    return any(t not in (int, float, bool, type(None)) and isinstance(value, t)
               for t in allowed)


def check_params(cls: type[Scheme], params: dict[str, Any]) -> None:
    """Every parameter one the scheme takes, of the type it declares: ``levels=3.7`` or
    ``levels=abc`` is an error naming the parameter, never a silent ``int()``."""
    import inspect
    import typing

    signature = inspect.signature(cls.__init__)
    names = [n for n, p in signature.parameters.items()
             if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no type check
        hints = {}
    for name, value in params.items():
        if name not in names:
            import difflib

            near = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(f"scheme '{cls.name}' has no parameter '{name}'."
                              + (f" Did you mean '{near[0]}'?" if near else "")
                              + f" Its parameters: {', '.join(names) or 'none'}")
        allowed = _allowed_types(hints.get(name))
        if allowed is not None and not _fits(value, allowed):
            kinds = " or ".join(sorted({t.__name__.replace("NoneType", "none")
                                        for t in allowed}))
            raise ConfigError(f"scheme '{cls.name}': parameter {name} must be {kinds}, got "
                              f"{str(value)[:40]!r}")


def _check_protocol_capabilities(cls: type[Scheme]) -> None:
    """At registration, not at run time: the scheme's protocol exists and the scheme has
    every method that protocol calls on it (``Protocol.scheme_needs``)."""
    from medveil.protocols.registry import get_protocol

    try:
        protocol = get_protocol(cls.protocol)
    except MedveilError as exc:
        raise ValueError(f"scheme {cls.__name__}: {exc}") from None
    missing = [m for m in protocol.scheme_needs if not callable(getattr(cls, m, None))]
    if missing:
        raise ValueError(f"scheme {cls.__name__} runs under the '{protocol.name}' protocol, "
                         f"which calls {', '.join(missing)} on it; implement them")
