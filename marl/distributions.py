"""Action distributions: turn a module's ``ACTION_DIST_INPUTS`` into actions.

Modules never sample (see ``docs/DESIGN-NOTES.md``): they return flat
distribution inputs ("logits"), and whoever samples (env runner, learner)
builds a distribution from them with ``cls.from_logits(logits)``. That keeps
modules compile- and export-friendly and lets the sampler swap in the
deterministic version (``to_deterministic()``) for inference.

Every class here follows one contract:

- ``from_logits(logits, **kw)`` builds an instance from a ``[B, D]`` tensor,
  where ``D == required_input_dim(space)``.
- ``sample(sample_shape=())`` / ``rsample(sample_shape=())`` return actions
  shaped ``[*sample_shape, B, ...]`` in the action formats of the design notes:
  Discrete -> int64 ``[B]``; MultiDiscrete -> int64 ``[B, n]``; Box -> float
  ``[B, *shape]``; Dict/Tuple -> dict/tuple of those.
- ``logp(actions)``, ``entropy()`` and ``kl(other)`` return one value per batch
  row, ``[B]``; for multi-dimensional actions they are summed over the action
  dimensions (the components are independent given the logits).
- ``to_deterministic()`` returns a distribution whose ``sample()`` is the mode.

Classes whose ``from_logits`` needs extra arguments (``input_lens`` for
MultiDiscrete, the child classes for Dict/Tuple) are bound with
``get_partial_dist_cls(**kwargs)``, which returns a real subclass (not a
``functools.partial``), so ``from_logits`` and ``required_input_dim`` stay
classmethods and the class stays picklable. ``get_default_dist_cls(space)``
returns such a class for any supported action space.

Index convention: categorical distributions produce 0-based indices. A
gymnasium ``Discrete(n, start=s)`` / ``MultiDiscrete(..., start=s)`` space's
``start`` offset is NOT added here; whoever hands actions to the env adds it.

This module imports only torch, numpy, gymnasium and the standard library, so
that every other package of ours can depend on it without cycles.
"""

from __future__ import annotations

import abc
import copyreg
import math
from typing import Any, ClassVar, Iterator, Mapping, Optional, Sequence, Tuple, Union

import gymnasium as gym
import numpy as np
import torch
import torch.distributions as td

__all__ = [
    "Distribution",
    "TorchCategorical",
    "TorchDiagGaussian",
    "TorchSquashedGaussian",
    "TorchDeterministic",
    "TorchMultiCategorical",
    "TorchMultiDistribution",
    "get_default_dist_cls",
]

SampleShape = Union[torch.Size, Sequence[int], tuple]


# --------------------------------------------------------------------------
# Partial classes: picklable subclasses with bound from_logits kwargs.
# --------------------------------------------------------------------------


class _DistributionMeta(abc.ABCMeta):
    """Metaclass of all distributions; exists so partial classes can be pickled.

    ``get_partial_dist_cls`` creates classes at run time, which pickle cannot
    find by name. A ``copyreg`` reducer registered for this metaclass rebuilds
    them from ``(base class, bound kwargs)`` instead, so module specs and
    connector pipelines that carry a distribution class can cross process
    boundaries (env runners in other processes).
    """


def _make_partial_dist_cls(base: type, bound_kwargs: dict) -> type:
    """Create the subclass of ``base`` whose ``from_logits`` defaults to ``bound_kwargs``."""
    name = f"{base.__name__}Partial"
    namespace = {
        "_bound_kwargs": dict(bound_kwargs),
        "_partial_of": base,
        "__module__": base.__module__,
        "__qualname__": name,
        "__doc__": (
            f"{base.__name__} with from_logits kwargs bound to {sorted(bound_kwargs)}."
            f"\n\n{base.__doc__ or ''}"
        ),
    }
    return type(base)(name, (base,), namespace)


def _reduce_distribution_class(cls: type) -> Any:
    partial_of = cls.__dict__.get("_partial_of")
    if partial_of is None:
        # An ordinary class: pickle it by reference, exactly as pickle would.
        return cls.__qualname__
    return _make_partial_dist_cls, (partial_of, dict(cls.__dict__["_bound_kwargs"]))


copyreg.pickle(_DistributionMeta, _reduce_distribution_class)


# --------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------


def _space_name(space: Any) -> str:
    return f"{space!r} (type {type(space).__name__})"


def _require_space(cls: type, space: Any, expected: tuple[type, ...]) -> None:
    if not isinstance(space, expected):
        names = " or ".join(f"gymnasium.spaces.{t.__name__}" for t in expected)
        raise TypeError(
            f"{cls.__name__}.required_input_dim: got space {_space_name(space)}; "
            f"expected {names}."
        )


def _as_shape(action_shape: Optional[Sequence[int]]) -> Optional[tuple[int, ...]]:
    return None if action_shape is None else tuple(int(s) for s in action_shape)


def _check_same_type(dist: "Distribution", other: Any, types: tuple[type, ...]) -> None:
    if not isinstance(other, types):
        raise TypeError(
            f"{type(dist).__name__}.kl: other must be a "
            f"{' or '.join(t.__name__ for t in types)}, got {type(other).__name__}."
        )


def _is_container(struct: Any) -> bool:
    return isinstance(struct, (Mapping, tuple, list))


def _flatten_struct(struct: Any) -> list:
    """Leaves of a nested dict/tuple/list in iteration order (classes are leaves)."""
    if isinstance(struct, Mapping):
        return [leaf for v in struct.values() for leaf in _flatten_struct(v)]
    if isinstance(struct, (tuple, list)):
        return [leaf for v in struct for leaf in _flatten_struct(v)]
    return [struct]


def _unflatten_like(struct: Any, leaves: Iterator) -> Any:
    """Rebuild ``struct``'s nesting with the next values of ``leaves``."""
    if isinstance(struct, Mapping):
        return {k: _unflatten_like(v, leaves) for k, v in struct.items()}
    if isinstance(struct, (tuple, list)):
        return type(struct)(_unflatten_like(v, leaves) for v in struct)
    return next(leaves)


def _flatten_like(struct: Any, values: Any, path: str = "actions") -> list:
    """Leaves of ``values``, read in ``struct``'s order (so a dict's own order doesn't matter)."""
    if isinstance(struct, Mapping):
        if not isinstance(values, Mapping):
            raise TypeError(f"{path}: expected a dict with keys {list(struct)}, got {type(values).__name__}.")
        missing = [k for k in struct if k not in values]
        if missing:
            raise KeyError(f"{path}: missing keys {missing}; expected keys {list(struct)}.")
        return [x for k, v in struct.items() for x in _flatten_like(v, values[k], f"{path}[{k!r}]")]
    if isinstance(struct, (tuple, list)):
        if not isinstance(values, (tuple, list)) or len(values) != len(struct):
            raise TypeError(
                f"{path}: expected a tuple of {len(struct)} items, got "
                f"{type(values).__name__}"
                + (f" of {len(values)} items" if isinstance(values, (tuple, list)) else "")
                + "."
            )
        return [
            x for i, (s, v) in enumerate(zip(struct, values)) for x in _flatten_like(s, v, f"{path}[{i}]")
        ]
    return [values]


def _split_logits(cls: type, logits: torch.Tensor, input_lens: Sequence[int]) -> tuple[torch.Tensor, ...]:
    lens = [int(n) for n in input_lens]
    if sum(lens) != logits.shape[-1]:
        raise ValueError(
            f"{cls.__name__}.from_logits: logits have last dim {logits.shape[-1]}, "
            f"but input_lens {lens} sum to {sum(lens)}."
        )
    return torch.split(logits, lens, dim=-1)


# --------------------------------------------------------------------------
# The abstract base.
# --------------------------------------------------------------------------


class Distribution(metaclass=_DistributionMeta):
    """Abstract action distribution built from a module's flat outputs.

    Subclasses implement ``from_logits`` and ``required_input_dim`` (the
    sampler side and the module side of the same contract) plus the usual
    probability methods. See the module docstring for shapes and dtypes.
    """

    # kwargs bound by get_partial_dist_cls; from_logits merges them with its own.
    _bound_kwargs: ClassVar[dict] = {}

    @classmethod
    @abc.abstractmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs: Any) -> "Distribution":
        """Build an instance from a flat ``[B, required_input_dim]`` tensor."""

    @classmethod
    @abc.abstractmethod
    def required_input_dim(cls, space: gym.Space, model_config: Optional[dict] = None) -> int:
        """Width of the ``logits`` that ``from_logits`` expects for ``space``."""

    @abc.abstractmethod
    def sample(self, sample_shape: SampleShape = ()) -> Any:
        """Draw actions without gradient, shaped ``[*sample_shape, B, ...]``."""

    def rsample(self, sample_shape: SampleShape = ()) -> Any:
        """Reparameterised (differentiable) sample; not every distribution has one."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define rsample(): it has no "
            "reparameterised sampler. Use sample() with score-function (logp) gradients."
        )

    @abc.abstractmethod
    def logp(self, actions: Any) -> torch.Tensor:
        """Log-probability (density) of ``actions``, shape ``[B]``."""

    @abc.abstractmethod
    def entropy(self) -> torch.Tensor:
        """Entropy per batch row, shape ``[B]``."""

    @abc.abstractmethod
    def kl(self, other: "Distribution") -> torch.Tensor:
        """``KL(self || other)`` per batch row, shape ``[B]``."""

    @abc.abstractmethod
    def to_deterministic(self) -> "Distribution":
        """A distribution whose ``sample()`` is this one's mode (used for inference)."""

    @classmethod
    def get_partial_dist_cls(cls, **kwargs: Any) -> type:
        """Return a subclass whose ``from_logits`` gets ``kwargs`` by default.

        Why a subclass and not ``functools.partial``: callers use the result as
        a class (``required_input_dim``, ``issubclass``, pickling), and
        ``from_logits(logits)`` must work with just the flat logits. Later
        calls may still override a bound kwarg explicitly. Binding on an
        already-partial class merges the kwargs.
        """
        base = cls.__dict__.get("_partial_of") or cls
        return _make_partial_dist_cls(base, {**cls._bound_kwargs, **kwargs})

    @classmethod
    def _resolve_kwargs(cls, explicit: dict, extra: dict) -> dict:
        """``from_logits`` kwargs: explicit non-None arguments win over bound ones.

        Unknown names (in ``extra`` or bound) are an error rather than being
        silently ignored.
        """
        merged = {**cls._bound_kwargs, **extra}
        unknown = sorted(set(merged) - set(explicit))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.from_logits: unexpected kwargs {unknown}; accepted: {sorted(explicit)}."
            )
        return {k: (v if v is not None else merged.get(k)) for k, v in explicit.items()}


# --------------------------------------------------------------------------
# Categorical.
# --------------------------------------------------------------------------


class TorchCategorical(Distribution):
    """Categorical over ``n`` choices, for ``Discrete(n)`` actions.

    ``logits`` ``[B, n]`` (unnormalised; masked entries may be
    ``torch.finfo(dtype).min``); actions int64 ``[B]``.
    """

    def __init__(self, logits: Optional[torch.Tensor] = None, probs: Optional[torch.Tensor] = None) -> None:
        if (logits is None) == (probs is None):
            raise ValueError("TorchCategorical needs exactly one of logits or probs.")
        self._dist = td.Categorical(logits=logits, probs=probs, validate_args=False)

    @property
    def logits(self) -> torch.Tensor:
        """Normalised log-probabilities ``[B, n]``."""
        return self._dist.logits

    @property
    def probs(self) -> torch.Tensor:
        return self._dist.probs

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs: Any) -> "TorchCategorical":
        cls._resolve_kwargs({}, kwargs)
        return cls(logits=logits)

    @classmethod
    def required_input_dim(cls, space: gym.Space, model_config: Optional[dict] = None) -> int:
        _require_space(cls, space, (gym.spaces.Discrete,))
        return int(space.n)

    def sample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        return self._dist.sample(torch.Size(sample_shape))

    def rsample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}.rsample() is not defined: a categorical draw is a "
            "discrete choice, so there is no reparameterisation that lets gradients "
            "flow through the sampled index. Use sample() with logp-based "
            "(score-function) gradients, or a Gumbel-softmax relaxation in your own code."
        )

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self._dist.log_prob(actions.long())

    def entropy(self) -> torch.Tensor:
        return self._dist.entropy()

    def kl(self, other: "Distribution") -> torch.Tensor:
        _check_same_type(self, other, (TorchCategorical,))
        return td.kl_divergence(self._dist, other._dist)

    def to_deterministic(self) -> "TorchDeterministic":
        return TorchDeterministic(loc=torch.argmax(self._dist.logits, dim=-1), event_ndims=0)


# --------------------------------------------------------------------------
# Deterministic (point mass).
# --------------------------------------------------------------------------


class TorchDeterministic(Distribution):
    """A point mass at ``loc``: the "distribution" of a deterministic policy.

    ``from_logits(loc)`` takes ``loc`` ``[B, *action_shape]`` (for a Box of
    shape ``(d,)``, ``[B, d]``). It is also what ``to_deterministic()`` of the
    other classes returns (argmax for categoricals, the mean for gaussians).
    ``logp`` and ``kl`` are undefined for a point mass and raise; ``entropy``
    is zero.
    """

    def __init__(self, loc: torch.Tensor, event_ndims: Optional[int] = None) -> None:
        self.loc = loc
        # Trailing dims that form one action; by default everything but the batch dim.
        self._event_ndims = max(loc.dim() - 1, 0) if event_ndims is None else int(event_ndims)

    @classmethod
    def from_logits(
        cls, logits: torch.Tensor, action_shape: Optional[Sequence[int]] = None, **kwargs: Any
    ) -> "TorchDeterministic":
        shape = _as_shape(cls._resolve_kwargs({"action_shape": action_shape}, kwargs)["action_shape"])
        if shape is None:
            return cls(loc=logits)
        return cls(loc=logits.reshape(*logits.shape[:-1], *shape), event_ndims=len(shape))

    @classmethod
    def required_input_dim(cls, space: gym.Space, model_config: Optional[dict] = None) -> int:
        _require_space(cls, space, (gym.spaces.Box,))
        return int(np.prod(space.shape))

    def sample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            return self.loc.detach().expand(*shape, *self.loc.shape).clone()

    def rsample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        # Gradients flow straight into loc (as in DDPG/TD3 actors).
        return self.loc.expand(*torch.Size(sample_shape), *self.loc.shape)

    def logp(self, actions: Any) -> torch.Tensor:
        raise NotImplementedError(
            "TorchDeterministic.logp() is not defined: a point mass has no density "
            "(it would be +inf at loc and -inf elsewhere). Deterministic "
            "distributions are for inference; compute logp on the stochastic "
            "distribution instead."
        )

    def entropy(self) -> torch.Tensor:
        batch_shape = self.loc.shape[: self.loc.dim() - self._event_ndims]
        dtype = self.loc.dtype if self.loc.is_floating_point() else torch.get_default_dtype()
        return torch.zeros(batch_shape, dtype=dtype, device=self.loc.device)

    def kl(self, other: "Distribution") -> torch.Tensor:
        raise NotImplementedError(
            "TorchDeterministic.kl() is not defined: the KL divergence between point "
            "masses is 0 or +inf, which is no use as a training signal."
        )

    def to_deterministic(self) -> "TorchDeterministic":
        return self


# --------------------------------------------------------------------------
# Gaussians.
# --------------------------------------------------------------------------


def _split_mean_log_std(
    cls: type, logits: torch.Tensor, action_shape: Optional[tuple[int, ...]]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    if logits.shape[-1] % 2:
        raise ValueError(
            f"{cls.__name__}.from_logits: logits last dim {logits.shape[-1]} is odd; "
            "expected [mean, log_std] halves of equal size (2 * action dim)."
        )
    loc, log_std = torch.chunk(logits, 2, dim=-1)
    if action_shape is None:
        return loc, log_std.exp(), 1
    if int(np.prod(action_shape)) != loc.shape[-1]:
        raise ValueError(
            f"{cls.__name__}.from_logits: action_shape {action_shape} needs "
            f"{2 * int(np.prod(action_shape))} logits, got {logits.shape[-1]}."
        )
    lead = loc.shape[:-1]
    return loc.reshape(*lead, *action_shape), log_std.exp().reshape(*lead, *action_shape), len(action_shape)


def _reshape_actions(actions: torch.Tensor, event_shape: torch.Size) -> torch.Tensor:
    """Accept actions flattened to ``[..., prod(event_shape)]`` as well as ``[..., *event_shape]``."""
    n = len(event_shape)
    flat_dim = int(np.prod(event_shape))
    if n and tuple(actions.shape[-n:]) != tuple(event_shape) and actions.shape[-1:] == (flat_dim,):
        return actions.reshape(*actions.shape[:-1], *event_shape)
    return actions


class TorchDiagGaussian(Distribution):
    """Gaussian with diagonal covariance, for ``Box`` actions.

    ``logits`` ``[B, 2*d]`` are ``[mean, log_std]`` halves. For a Box of
    shape ``(d,)`` actions are ``[B, d]``; for multi-dim Box shapes the
    halves are flat (``d = prod(shape)``) and ``from_logits(...,
    action_shape=shape)`` (bound by ``get_default_dist_cls``) reshapes
    samples to ``[B, *shape]``. ``logp`` and ``entropy`` sum over the action
    dims. No clipping of ``log_std`` happens here (that is the model's job,
    ``log_std_clip_param``). Samples are unbounded: clip to the Box bounds
    before stepping the env.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, event_ndims: int = 1) -> None:
        self.loc = loc
        self.scale = scale
        self._event_ndims = int(event_ndims)
        self._dist = td.Independent(td.Normal(loc, scale, validate_args=False), self._event_ndims, validate_args=False)

    @classmethod
    def from_logits(
        cls, logits: torch.Tensor, action_shape: Optional[Sequence[int]] = None, **kwargs: Any
    ) -> "TorchDiagGaussian":
        shape = _as_shape(cls._resolve_kwargs({"action_shape": action_shape}, kwargs)["action_shape"])
        loc, scale, event_ndims = _split_mean_log_std(cls, logits, shape)
        return cls(loc, scale, event_ndims=event_ndims)

    @classmethod
    def required_input_dim(cls, space: gym.Space, model_config: Optional[dict] = None) -> int:
        _require_space(cls, space, (gym.spaces.Box,))
        return 2 * int(np.prod(space.shape))

    def sample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        return self._dist.sample(torch.Size(sample_shape))

    def rsample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        return self._dist.rsample(torch.Size(sample_shape))

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self._dist.log_prob(_reshape_actions(actions, self._dist.event_shape))

    def entropy(self) -> torch.Tensor:
        return self._dist.entropy()

    def kl(self, other: "Distribution") -> torch.Tensor:
        _check_same_type(self, other, (TorchDiagGaussian,))
        return td.kl_divergence(self._dist, other._dist)

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self.loc, event_ndims=self._event_ndims)


class TorchSquashedGaussian(Distribution):
    """Gaussian squashed by ``tanh`` and rescaled to ``[low, high]`` (SAC-style).

    ``a = low + (tanh(x) + 1) * (high - low) / 2`` with ``x ~ N(mean, std)``;
    ``logits`` as for ``TorchDiagGaussian``; ``from_logits(logits, low=-1.0,
    high=1.0)`` where ``low``/``high`` are floats or per-dim arrays.

    ``logp`` is the exact density of ``a`` (change of variables through tanh
    AND the affine rescale). Actions are clamped just inside the open interval
    before ``atanh`` so that samples that rounded onto a bound give a finite
    value instead of ``inf``. Note: RLlib omits the constant affine term
    ``-sum(log((high - low) / 2))``; it cancels in likelihood ratios and
    gradients, so the two agree for training.

    ``entropy()`` raises: the entropy of a squashed gaussian has no closed
    form, and the gaussian entropy is not a safe stand-in (maximising it
    pushes samples into tanh saturation, where the true entropy falls).
    Use ``-logp(rsample())`` as a Monte-Carlo estimate. ``kl()`` IS exact:
    KL is invariant under the same bijection applied to both sides, so it is
    the KL of the underlying gaussians (both must share ``low``/``high``).
    """

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        low: Union[float, np.ndarray, torch.Tensor] = -1.0,
        high: Union[float, np.ndarray, torch.Tensor] = 1.0,
        event_ndims: int = 1,
    ) -> None:
        self.loc = loc
        self.scale = scale
        self.low = torch.as_tensor(low, dtype=loc.dtype, device=loc.device)
        self.high = torch.as_tensor(high, dtype=loc.dtype, device=loc.device)
        if not bool(torch.all(torch.isfinite(self.low)) and torch.all(torch.isfinite(self.high))):
            raise ValueError(f"TorchSquashedGaussian: low {low} and high {high} must be finite.")
        if not bool(torch.all(self.high > self.low)):
            raise ValueError(
                f"TorchSquashedGaussian: need high > low everywhere, got low {low}, high {high}."
            )
        self._event_ndims = int(event_ndims)
        self._normal = td.Normal(loc, scale, validate_args=False)
        self._dist = td.Independent(self._normal, self._event_ndims, validate_args=False)

    @classmethod
    def from_logits(
        cls,
        logits: torch.Tensor,
        low: Union[float, np.ndarray, torch.Tensor, None] = None,
        high: Union[float, np.ndarray, torch.Tensor, None] = None,
        action_shape: Optional[Sequence[int]] = None,
        **kwargs: Any,
    ) -> "TorchSquashedGaussian":
        kw = cls._resolve_kwargs({"low": low, "high": high, "action_shape": action_shape}, kwargs)
        low = -1.0 if kw["low"] is None else kw["low"]
        high = 1.0 if kw["high"] is None else kw["high"]
        loc, scale, event_ndims = _split_mean_log_std(cls, logits, _as_shape(kw["action_shape"]))
        return cls(loc, scale, low=low, high=high, event_ndims=event_ndims)

    @classmethod
    def required_input_dim(cls, space: gym.Space, model_config: Optional[dict] = None) -> int:
        _require_space(cls, space, (gym.spaces.Box,))
        return 2 * int(np.prod(space.shape))

    def _squash(self, x: torch.Tensor) -> torch.Tensor:
        return self.low + (torch.tanh(x) + 1.0) * (self.high - self.low) / 2.0

    def sample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        return self._squash(self._dist.sample(torch.Size(sample_shape)))

    def rsample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        return self._squash(self._dist.rsample(torch.Size(sample_shape)))

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        """Density of squashed actions, the pre-squash value recovered with ``atanh`` in
        float64, so it is exact for every action its dtype can hold strictly inside
        the bounds. An action that rounded onto a bound (float32 does so for
        ``|x| > 9``) is read as the nearest value its dtype holds inside, which
        keeps the result finite; ``rsample_and_logp()``, which never inverts the
        squash, is exact there too."""
        actions = _reshape_actions(actions, self._dist.event_shape).to(self.loc.dtype)
        half_range = (self.high - self.low) / 2.0
        u = ((actions.double() - self.low.double()) / half_range.double() - 1.0)
        inside = torch.finfo(self.loc.dtype).eps / 2.0  # the dtype's spacing just below 1
        x = torch.atanh(u.clamp(-1.0 + inside, 1.0 - inside)).to(self.loc.dtype)
        return self._logp_of_presquash(x)

    def _logp_of_presquash(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x) - log |d squash / dx|`` with ``log(1 - tanh(x)^2)`` in its overflow-free form."""
        half_range = (self.high - self.low) / 2.0
        log_det_tanh = 2.0 * (math.log(2.0) - x - torch.nn.functional.softplus(-2.0 * x))
        per_dim = self._normal.log_prob(x) - log_det_tanh - torch.log(half_range)
        if self._event_ndims:
            per_dim = per_dim.sum(dim=tuple(range(-self._event_ndims, 0)))
        return per_dim

    def rsample_and_logp(self, sample_shape: SampleShape = ()) -> Tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample and its log-density, from the pre-squash sample itself.

        What SAC's actor and entropy terms need: no ``atanh`` of a (possibly
        saturated) action, so the density is exact however far into the tanh's
        flat tails the sample lies.
        """
        x = self._dist.rsample(torch.Size(sample_shape))
        return self._squash(x), self._logp_of_presquash(x)

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError(
            "TorchSquashedGaussian.entropy() is not defined: a tanh-squashed gaussian "
            "has no closed-form entropy, and the gaussian's entropy would overstate it "
            "near the bounds. Estimate it as -logp(rsample()) instead."
        )

    def kl(self, other: "Distribution") -> torch.Tensor:
        _check_same_type(self, other, (TorchSquashedGaussian,))
        same_bounds = (
            self.low.shape == other.low.shape
            and self.high.shape == other.high.shape
            and bool(torch.equal(self.low, other.low))
            and bool(torch.equal(self.high, other.high))
        )
        if not same_bounds:
            raise ValueError(
                "TorchSquashedGaussian.kl: both distributions must share low/high "
                f"(got low {self.low.tolist()} vs {other.low.tolist()}, "
                f"high {self.high.tolist()} vs {other.high.tolist()})."
            )
        # KL is invariant under a shared bijection (tanh + affine).
        return td.kl_divergence(self._dist, other._dist)

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self._squash(self.loc), event_ndims=self._event_ndims)


# --------------------------------------------------------------------------
# MultiDiscrete.
# --------------------------------------------------------------------------


class TorchMultiCategorical(Distribution):
    """Independent categoricals, one per ``MultiDiscrete`` component.

    ``from_logits(logits, input_lens=[n1, n2, ...])`` splits ``[B, sum(n)]``
    logits; actions are int64 ``[B, k]`` (``k = len(input_lens)``), or
    ``[B, *nvec.shape]`` when ``action_shape`` is bound for a multi-dim
    MultiDiscrete. ``logp``, ``entropy`` and ``kl`` sum over components.
    """

    def __init__(
        self, categoricals: Sequence[TorchCategorical], action_shape: Optional[Sequence[int]] = None
    ) -> None:
        if not categoricals:
            raise ValueError("TorchMultiCategorical needs at least one categorical.")
        self._cats = list(categoricals)
        self._action_shape = _as_shape(action_shape)

    @classmethod
    def from_logits(
        cls,
        logits: torch.Tensor,
        input_lens: Optional[Sequence[int]] = None,
        action_shape: Optional[Sequence[int]] = None,
        **kwargs: Any,
    ) -> "TorchMultiCategorical":
        kw = cls._resolve_kwargs({"input_lens": input_lens, "action_shape": action_shape}, kwargs)
        input_lens, action_shape = kw["input_lens"], kw["action_shape"]
        if input_lens is None:
            raise ValueError(
                f"{cls.__name__}.from_logits needs input_lens (one size per component); "
                "bind it with get_partial_dist_cls(input_lens=...) or use get_default_dist_cls(space)."
            )
        chunks = _split_logits(cls, logits, input_lens)
        return cls([TorchCategorical(logits=c) for c in chunks], action_shape=action_shape)

    @classmethod
    def required_input_dim(cls, space: gym.Space, model_config: Optional[dict] = None) -> int:
        _require_space(cls, space, (gym.spaces.MultiDiscrete,))
        return int(np.sum(space.nvec))

    def _shape_actions(self, flat: torch.Tensor) -> torch.Tensor:
        if self._action_shape is None:
            return flat
        return flat.reshape(*flat.shape[:-1], *self._action_shape)

    def _flat_actions(self, actions: torch.Tensor) -> torch.Tensor:
        if self._action_shape is not None and len(self._action_shape) != 1:
            actions = actions.reshape(*actions.shape[: actions.dim() - len(self._action_shape)], -1)
        if actions.shape[-1] != len(self._cats):
            raise ValueError(
                f"{type(self).__name__}.logp: actions have last dim {actions.shape[-1]}, "
                f"expected {len(self._cats)} components."
            )
        return actions

    def sample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        return self._shape_actions(torch.stack([c.sample(sample_shape) for c in self._cats], dim=-1))

    def rsample(self, sample_shape: SampleShape = ()) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}.rsample() is not defined: its components are "
            "categorical, and discrete draws have no reparameterisation."
        )

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        parts = torch.unbind(self._flat_actions(actions), dim=-1)
        return torch.stack([c.logp(a) for c, a in zip(self._cats, parts)], dim=-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        return torch.stack([c.entropy() for c in self._cats], dim=-1).sum(-1)

    def kl(self, other: "Distribution") -> torch.Tensor:
        _check_same_type(self, other, (TorchMultiCategorical,))
        if len(other._cats) != len(self._cats):
            raise ValueError(
                f"{type(self).__name__}.kl: component counts differ "
                f"({len(self._cats)} vs {len(other._cats)})."
            )
        return torch.stack([a.kl(b) for a, b in zip(self._cats, other._cats)], dim=-1).sum(-1)

    def to_deterministic(self) -> TorchDeterministic:
        modes = torch.stack([torch.argmax(c.logits, dim=-1) for c in self._cats], dim=-1)
        shape = self._action_shape or (len(self._cats),)
        return TorchDeterministic(loc=self._shape_actions(modes), event_ndims=len(shape))


# --------------------------------------------------------------------------
# Dict / Tuple.
# --------------------------------------------------------------------------


def _default_children(space: gym.Space) -> Union[dict, tuple]:
    """``get_default_dist_cls`` of each direct child of a Dict/Tuple space, in its order.

    A ``TypeError`` from an unsupported child is re-raised naming where it sits.
    """
    if isinstance(space, gym.spaces.Dict):
        items = list(space.spaces.items())
    elif isinstance(space, gym.spaces.Tuple):
        items = list(enumerate(space.spaces))
    else:
        raise TypeError(f"expected a Dict or Tuple space, got {_space_name(space)}.")
    if not items:
        raise ValueError(f"empty action space {space!r} has no actions to sample.")
    classes = {}
    for key, sub in items:
        try:
            classes[key] = get_default_dist_cls(sub)
        except TypeError as e:
            raise TypeError(f"get_default_dist_cls: in {space!r} at {key!r}: {e}") from None
    return classes if isinstance(space, gym.spaces.Dict) else tuple(classes.values())


def _required_dim_struct(cls_struct: Any, space: gym.Space, path: str) -> int:
    """Sum of ``leaf_cls.required_input_dim(leaf_space)`` over a cls struct paired with a space."""
    if isinstance(cls_struct, Mapping):
        if not isinstance(space, gym.spaces.Dict) or set(cls_struct) != set(space.spaces):
            raise ValueError(
                f"{path}: child_distribution_cls_struct keys {list(cls_struct)} do not match {space!r}."
            )
        return sum(_required_dim_struct(c, space[k], f"{path}[{k!r}]") for k, c in cls_struct.items())
    if isinstance(cls_struct, (tuple, list)):
        if not isinstance(space, gym.spaces.Tuple) or len(cls_struct) != len(space.spaces):
            raise ValueError(f"{path}: child_distribution_cls_struct {cls_struct} does not match {space!r}.")
        pairs = enumerate(zip(cls_struct, space.spaces))
        return sum(_required_dim_struct(c, s, f"{path}[{i}]") for i, (c, s) in pairs)
    return int(cls_struct.required_input_dim(space))


class TorchMultiDistribution(Distribution):
    """Independent child distributions for ``Dict`` / ``Tuple`` action spaces.

    Built by ``from_logits(logits, child_distribution_cls_struct=...,
    input_lens=..., space=...)``: the flat logits are split by ``input_lens``
    (one width per leaf class, in the struct's order; a flat list or the same
    nesting as the struct) and each chunk goes to its leaf class. A leaf class
    may itself be a partial ``TorchMultiDistribution`` (that is how
    ``get_default_dist_cls`` handles nested spaces). With only ``space``
    given, the children default to ``get_default_dist_cls`` of each subspace.

    ``sample()`` returns a dict with the struct's keys and order (Dict) or a
    tuple (Tuple); ``logp(actions)`` takes the same structure (dict keys are
    looked up, so their order does not matter). ``logp``, ``entropy`` and
    ``kl`` sum over the children.
    """

    def __init__(
        self, child_distribution_struct: Union[Mapping[Any, Distribution], Sequence[Distribution]]
    ) -> None:
        if not _is_container(child_distribution_struct):
            raise TypeError(
                "TorchMultiDistribution needs a dict or tuple of child distributions, "
                f"got {type(child_distribution_struct).__name__}."
            )
        self._struct = child_distribution_struct
        self._flat: list[Distribution] = _flatten_struct(child_distribution_struct)
        if not self._flat:
            raise ValueError("TorchMultiDistribution needs at least one child distribution.")

    @property
    def children(self) -> Union[Mapping[Any, Distribution], Sequence[Distribution]]:
        """The child distributions, in the structure of the action space."""
        return self._struct

    @classmethod
    def from_logits(
        cls,
        logits: torch.Tensor,
        child_distribution_cls_struct: Any = None,
        input_lens: Any = None,
        space: Optional[gym.Space] = None,
        **kwargs: Any,
    ) -> "TorchMultiDistribution":
        kw = cls._resolve_kwargs(
            {
                "child_distribution_cls_struct": child_distribution_cls_struct,
                "input_lens": input_lens,
                "space": space,
            },
            kwargs,
        )
        cls_struct, input_lens, space = kw["child_distribution_cls_struct"], kw["input_lens"], kw["space"]
        if cls_struct is None:
            if space is None:
                raise ValueError(
                    f"{cls.__name__}.from_logits needs child_distribution_cls_struct or space; "
                    "bind them with get_partial_dist_cls(...) or use get_default_dist_cls(space)."
                )
            cls_struct = _default_children(space)
        leaf_classes = _flatten_struct(cls_struct)
        if input_lens is None:
            if space is None:
                raise ValueError(f"{cls.__name__}.from_logits needs input_lens or space to split the logits.")
            input_lens = _flat_required_dims(cls_struct, space)
        lens = _flatten_struct(input_lens)
        if len(lens) != len(leaf_classes):
            raise ValueError(
                f"{cls.__name__}.from_logits: {len(lens)} input_lens {lens} for "
                f"{len(leaf_classes)} child distributions."
            )
        chunks = _split_logits(cls, logits, lens)
        children = [c.from_logits(chunk) for c, chunk in zip(leaf_classes, chunks)]
        return cls(_unflatten_like(cls_struct, iter(children)))

    @classmethod
    def required_input_dim(cls, space: gym.Space, model_config: Optional[dict] = None) -> int:
        bound = cls._bound_kwargs
        if bound.get("input_lens") is not None:
            return int(sum(_flatten_struct(bound["input_lens"])))
        _require_space(cls, space, (gym.spaces.Dict, gym.spaces.Tuple))
        cls_struct = bound.get("child_distribution_cls_struct")
        if cls_struct is None:
            cls_struct = _default_children(space)
        return _required_dim_struct(cls_struct, space, cls.__name__)

    def _map(self, fn: Any) -> Any:
        return _unflatten_like(self._struct, iter([fn(d) for d in self._flat]))

    def sample(self, sample_shape: SampleShape = ()) -> Any:
        return self._map(lambda d: d.sample(sample_shape))

    def rsample(self, sample_shape: SampleShape = ()) -> Any:
        return self._map(lambda d: d.rsample(sample_shape))

    def logp(self, actions: Any) -> torch.Tensor:
        flat = _flatten_like(self._struct, actions)
        return torch.stack([d.logp(a) for d, a in zip(self._flat, flat)], dim=-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        return torch.stack([d.entropy() for d in self._flat], dim=-1).sum(-1)

    def kl(self, other: "Distribution") -> torch.Tensor:
        _check_same_type(self, other, (TorchMultiDistribution,))
        others = _flatten_like(self._struct, other._struct, "other")
        return torch.stack([a.kl(b) for a, b in zip(self._flat, others)], dim=-1).sum(-1)

    def to_deterministic(self) -> "TorchMultiDistribution":
        return TorchMultiDistribution(self._map(lambda d: d.to_deterministic()))


def _flat_required_dims(cls_struct: Any, space: gym.Space) -> list[int]:
    """Per-leaf-class logit widths, pairing a (possibly nested) cls struct with ``space``."""
    if isinstance(cls_struct, Mapping):
        return [n for k, c in cls_struct.items() for n in _flat_required_dims(c, space[k])]
    if isinstance(cls_struct, (tuple, list)):
        return [n for c, s in zip(cls_struct, space.spaces) for n in _flat_required_dims(c, s)]
    return [int(cls_struct.required_input_dim(space))]


# --------------------------------------------------------------------------
# Defaults per action space.
# --------------------------------------------------------------------------

_SUPPORTED = "Discrete, MultiDiscrete, Box, and Dict/Tuple (nested allowed) of those"


def get_default_dist_cls(action_space: gym.Space) -> type:
    """The distribution class a default module uses for ``action_space``.

    The returned class's ``from_logits(flat_logits)`` takes a flat
    ``[B, cls.required_input_dim(action_space)]`` tensor directly: kwargs that
    depend on the space (``input_lens``, ``action_shape``, child classes) are
    already bound via ``get_partial_dist_cls``. Discrete -> TorchCategorical;
    MultiDiscrete -> partial TorchMultiCategorical; Box -> TorchDiagGaussian
    (a partial with ``action_shape`` for Box shapes other than ``(d,)``);
    Dict/Tuple -> partial TorchMultiDistribution. Each call creates fresh
    partial classes, so compare with ``issubclass`` rather than ``is``.

    Raises:
        TypeError: for any other space, naming it and the supported ones.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return TorchCategorical
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        nvec = np.asarray(action_space.nvec)
        kwargs: dict = {"input_lens": [int(n) for n in nvec.reshape(-1)]}
        if nvec.ndim != 1:
            kwargs["action_shape"] = tuple(nvec.shape)
        return TorchMultiCategorical.get_partial_dist_cls(**kwargs)
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) == 1:
            return TorchDiagGaussian
        return TorchDiagGaussian.get_partial_dist_cls(action_shape=tuple(action_space.shape))
    if isinstance(action_space, (gym.spaces.Dict, gym.spaces.Tuple)):
        cls_struct = _default_children(action_space)
        # One width per direct child; nested Dict/Tuple children are partial classes themselves.
        input_lens = _flat_required_dims(cls_struct, action_space)
        return TorchMultiDistribution.get_partial_dist_cls(
            space=action_space, child_distribution_cls_struct=cls_struct, input_lens=input_lens
        )
    raise TypeError(
        f"get_default_dist_cls: no default action distribution for space "
        f"{_space_name(action_space)}; supported action spaces are {_SUPPORTED}."
    )
