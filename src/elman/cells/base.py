"""The cell contract (:class:`CellEquations`), what the cells share (the in-place sigmoid,
PyTorch's initialisation, the input and state checks), and :class:`CellBase`, the single-step
module that runs a cell's equations through the same time loop as the layers (with T = 1), so a
cell and a layer cannot disagree. ``docs/cells.md`` walks through adding a cell."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate
from ..init import uniform_
from ..module import Module, Param
from ..timeloop import Weights, Zoneout, sequence_backward, sequence_forward

__all__ = ["ParamSpec", "CellEquations", "make_parameters", "parameter_count", "sigmoid_",
           "CellBase",
           "check_input", "check_state"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a layer-direction: ``name`` (the layers add ``_l{k}`` and
    ``_reverse``), ``shape``, and ``init``: ``"uniform"`` (PyTorch's U(-1/sqrt(H), 1/sqrt(H))),
    ``"zeros"``, ``"ones"``, or a function ``init(array, rng)`` filling the array in place."""
    name: str
    shape: tuple
    init: object = "uniform"


class CellEquations:
    """The contract a recurrent cell fulfils; the engine (:mod:`elman.timeloop`) runs any cell
    that does, over sequences, both directions, stacked layers and variable lengths.

    A cell declares:

    - ``gates`` G: the rows of ``weight_ih``/``weight_hh`` are G blocks of H;
      ``recurrent_gates``: how many of those blocks take ``h_prev`` itself (the loop's per-step
      GEMM ``h_prev @ W_hh[:K].T``, K = recurrent_gates * H); the others are the cell's own
      business (``other_recurrent_grads``);
    - its states: ``has_cell`` (a second state ``c`` (N, H), as the LSTM's);
    - what it saves for backward: the activated gates (always, (T, N, G*H)), plus
      ``saved_width`` blocks of H per step; ``work_width`` blocks of per-step scratch;
      ``separate_dgh``: whether the recurrent side's pre-activation gradients differ from the
      input side's (then the engine gives it a separate ``dGH``);
    - its parameters: :meth:`parameters`, names, shapes and initialisers of one
      layer-direction (default: PyTorch's four, plus ``weight_hr`` with a projection);
      they reach the step functions as a mapping by those names (:class:`~elman.timeloop.Weights`);
    - its step equations, forward and backward side by side, in NumPy (:meth:`prepare_forward`,
      :meth:`forward`, :meth:`prepare_backward`, :meth:`backward`): the reference;
    - optionally ``kernel``, the name of the module in :mod:`elman.fast` that runs the same
      equations as one compiled loop (``forward(eq, loop)``/``backward(eq, loop)`` with the
      argument objects :class:`~elman.timeloop.ForwardLoop`/``BackwardLoop``). A cell without
      one runs the NumPy steps, and says so (:class:`elman.fast.FastPathWarning`).
    """

    gates: int
    recurrent_gates: int
    has_cell = False
    saved_width = 0
    work_width = 0
    separate_dgh = False
    kernel: str | None = None

    def parameters(self, input_size: int, hidden_size: int, proj_size: int = 0,
                   bias: bool = True) -> list[ParamSpec]:
        """One layer-direction's parameters, in creation order (the order of the random
        draws: it fixes which weights a seed gives)."""
        G, H, P = self.gates, hidden_size, proj_size or hidden_size
        specs = [ParamSpec("weight_ih", (G * H, input_size)), ParamSpec("weight_hh", (G * H, P))]
        if bias:
            specs += [ParamSpec("bias_ih", (G * H,)), ParamSpec("bias_hh", (G * H,))]
        if proj_size:
            specs.append(ParamSpec("weight_hr", (P, H)))
        return specs

    def prepare_forward(self, w: Weights, H: int, dtype):
        """``(bias added to the input projection or None, step constants)`` for a sequence."""
        raise NotImplementedError

    def keeps_operands(self) -> bool:
        """Whether a small no-grad call of a batch of one may keep what its compiled loop is
        given from one call to the next (:class:`elman.lean_plan.LeanPlan`), remaking only the
        input projection's bias at each call, by :meth:`projection_bias`: True where
        :meth:`prepare_forward`'s step constants are views of the weights or constants of the
        size alone, and its bias is :meth:`projection_bias`'s. A cell class says so itself
        (the plan asks only a class that defines this method: a subclass that changes
        :meth:`prepare_forward` is not taken at its parent's word)."""
        return False

    def projection_bias(self, w: Weights, H: int, out=None):
        """The bias :meth:`prepare_forward` adds to the input projection, from the weights as
        they are now, written into ``out`` (G*H,) where given; None without biases."""
        raise NotImplementedError

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved) -> None:
        """One step for the running rows: ``gx`` (n, G*H) the input projection (overwritten
        with the activated gates), ``gh`` (n, K) the recurrent GEMM; writes ``h`` (and ``c``,
        ``saved``) in place."""
        raise NotImplementedError

    def prepare_backward(self, cache, dGX, dGH):
        """Whole-sequence derivative factors into ``dGX``/``dGH``; returns what ``backward``
        needs per step (``aux``) or None."""
        raise NotImplementedError

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        """One step back: turns ``dh`` (and ``dc``, updated in place to the gradient wrt
        ``c_prev``) into the pre-activation gradients ``dgx``/``dgh``; returns the part of
        ``dh_prev`` that does not go through the loop's GEMM, or None."""
        raise NotImplementedError

    def transform_input(self, GX, w: Weights):
        """Transform the raw input projection ``GX = X W_ih^T`` (T, N, G*H) in place before the
        bias is added (a layer-normalised cell normalises it); returns what the backward needs,
        kept as ``cache.input_state``. Default: nothing."""
        return None

    def transform_input_backward(self, dGX, cache, g: Weights):
        """The gradient wrt the transformed projection back to the raw one (in place or new;
        returned), adding the transform's parameter gradients into ``g``. Default: as is."""
        return dGX

    def bias_grads(self, dGX, dGH, g: Weights, split: int) -> None:
        """Add the bias gradients: ``bias_ih`` acts on the input side (``dGX``); ``bias_hh`` on
        the recurrent side, whose pre-activation gradient is ``dGX``'s for the first ``split``
        gate columns and ``dGH``'s for the rest (all of ``dGX``'s when ``dGH is dGX``)."""
        T, N, GH = dGX.shape
        db_h = None if dGH is dGX else dGH.reshape(T * N, dGH.shape[2]).sum(axis=0)
        self.add_bias_sums(dGX.reshape(T * N, GH).sum(axis=0), db_h, g, split)

    @staticmethod
    def add_bias_sums(db_x: np.ndarray, db_h: np.ndarray | None, g: Weights,
                      split: int) -> None:
        """:meth:`bias_grads` from the sums of the rows: ``db_x`` of ``dGX``'s, ``db_h`` of
        ``dGH``'s (None where ``dGH`` is ``dGX``); what a compiled backward loop that summed
        them as it went hands over (``BackwardLoop.bias_sums``)."""
        g["bias_ih"] += db_x
        if db_h is None:
            g["bias_hh"] += db_x
        else:
            g["bias_hh"][:split] += db_x[:split]
            g["bias_hh"][split:] += db_h

    def parameter_grads(self, cache, dGX, dGH, g: Weights) -> None:
        """Add the gradients of the cell's own parameters (those beyond the standard
        ``weight_ih``/``weight_hh``/``bias_*``/``weight_hr``, which the engine does) into ``g``,
        from the whole sequence's pre-activation gradients (padded slots are zero). Default:
        the cell has none."""

    def other_recurrent_grads(self, cache, dGH, g: Weights) -> None:
        """Weight gradients of the gate blocks past ``recurrent_gates`` (their recurrent input
        is not ``h_prev``); only cells with such blocks define it."""
        raise NotImplementedError(f"{type(self).__name__} has recurrent blocks the loop's GEMM "
                                  f"does not cover, but no other_recurrent_grads")


def make_parameters(specs: list[ParamSpec], hidden_size: int, dtype, rng) -> dict[str, Param]:
    """``{name: Param}`` for ``specs``, initialised in order from ``rng``."""
    bound = 1.0 / np.sqrt(hidden_size)
    params = {}
    for spec in specs:
        array = np.empty(spec.shape, dtype)
        if spec.init == "uniform":
            uniform_(array, bound, rng)
        elif spec.init == "zeros":
            array.fill(0)
        elif spec.init == "ones":
            array.fill(1)
        else:
            spec.init(array, rng)
        params[spec.name] = Param(array)
    return params


def parameter_count(specs: list[ParamSpec]) -> int:
    """Values in ``specs`` (Python integers: sizes may be absurd, and must not wrap around)."""
    return sum(math.prod(int(d) for d in spec.shape) for spec in specs)


def sigmoid_(x: np.ndarray) -> np.ndarray:
    """In place: ``sigmoid(x) = (1 + tanh(x / 2)) / 2``. Same value as ``1 / (1 + exp(-x))`` but
    cannot overflow, and costs one transcendental call on ``x``'s own memory."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


def check_input(x, input_size: int, dtype: np.dtype, batched_ndim: int, name: str = "input",
                time_axis: int | None = None):
    """Convert and check an input whose last axis is the feature axis.

    Returns ``(array, batched)``; ``batched_ndim`` is 3 for layers (T, N, I) and 2 for cells.
    A batch of no sequences (N = 0) is accepted and gives empty results, as in PyTorch; a
    sequence of no steps is not (``time_axis``, the time axis of batched input, for layers).
    """
    arr = _validate.float_array(name, x, dtype)
    if arr.ndim not in (batched_ndim - 1, batched_ndim):
        raise ValueError(
            f"{name} must have {batched_ndim - 1} (unbatched) or {batched_ndim} (batched) "
            f"dimensions, got {arr.ndim} with shape {arr.shape}")
    if arr.shape[-1] != input_size:
        raise ValueError(
            f"{name}.shape[-1] must be equal to input_size. Expected {input_size}, "
            f"got {arr.shape[-1]}")
    batched = arr.ndim == batched_ndim
    if time_axis is not None and arr.shape[time_axis if batched else 0] == 0:
        raise ValueError(f"{name} must have at least one time step (as in PyTorch), got shape "
                         f"{arr.shape}")
    return arr, batched


def check_state(name: str, value, expected: tuple, dtype: np.dtype) -> np.ndarray:
    arr = _validate.float_array(name, value, dtype)
    if arr.shape != tuple(expected):
        raise ValueError(f"Expected {name} of shape {tuple(expected)}, got {arr.shape}")
    return arr


class CellBase(Module):
    """One time step of a cell, with PyTorch's ``RNNCell``/``GRUCell``/``LSTMCell`` interface.

    Parameters ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), ``bias_ih`` and ``bias_hh`` (G*H,)
    where G is the cell's gate count; all initialised U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch.
    Input ``x`` is (N, I) or unbatched (I,); states are (N, H) or (H,), zeros when omitted.

    ``zoneout=p`` (Krueger et al. 2017): the returned state is ``a * h + (1 - a) * h~`` (and
    the same for ``c``) where ``h~`` is the cell's step, and ``a`` is a 0/1 mask drawn afresh
    at every call in training (1 with probability p), p itself in evaluation; as the layers'
    ``zoneout`` (:class:`elman.recurrent.RecurrentLayer`), one step at a time.
    """

    def __init__(self, eq, input_size, hidden_size, bias=True, dtype=np.float32, seed=None,
                 zoneout=0.0):
        super().__init__()
        self.eq = eq
        self.input_size = _validate.positive_int("input_size", input_size)
        self.hidden_size = _validate.positive_int("hidden_size", hidden_size)
        self.bias = _validate.flag("bias", bias)
        self.dtype = _validate.float_dtype(dtype)
        self.zoneout = _validate.rate_below_one("zoneout", zoneout)
        self._rng = rng = _validate.rng(seed)       # the weights, then the zoneout masks
        H, I = self.hidden_size, self.input_size
        specs = eq.parameters(I, H, 0, self.bias)
        _validate.affordable(type(self).__name__, parameter_count(specs), self.dtype,
                             {"input_size": I, "hidden_size": H})
        self._names = [spec.name for spec in specs]
        for name, param in make_parameters(specs, H, self.dtype, rng).items():
            setattr(self, name, param)
        self._cache = None

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.zoneout:
            s += f", zoneout={self.zoneout!r}"
        return s + ("" if self.dtype == np.float32 else f", dtype={self.dtype}")

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values (``seed`` is not kept)."""
        cfg = {"input_size": self.input_size, "hidden_size": self.hidden_size,
               "bias": self.bias, "dtype": self.dtype.name}
        if self.zoneout:                  # only when used: older configs stay the same
            cfg["zoneout"] = self.zoneout
        return cfg

    def _weights(self, grads: bool = False) -> Weights:
        return {name: getattr(getattr(self, name), "grad" if grads else "data")
                for name in self._names}

    def forward(self, x, hx=None):
        x, batched = check_input(x, self.input_size, self.dtype, 2)
        X = x.reshape(1, x.shape[0] if batched else 1, self.input_size)
        N, H = X.shape[1], self.hidden_size
        state_shape = (N, H) if batched else (H,)
        if self.eq.has_cell:
            if hx is None:
                h0 = c0 = np.zeros((N, H), self.dtype)
            else:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"hx of {type(self).__name__} must be a tuple (h, c), "
                                    f"got {type(hx).__name__}")
                h0 = check_state("h", hx[0], state_shape, self.dtype).reshape(N, H)
                c0 = check_state("c", hx[1], state_shape, self.dtype).reshape(N, H)
        else:
            c0 = None
            h0 = (np.zeros((N, H), self.dtype) if hx is None
                  else check_state("hx", hx, state_shape, self.dtype).reshape(N, H))
        zone = Zoneout.draw(self.zoneout, self.training, self._rng, (1, N, H),
                            H if self.eq.has_cell else None, self.dtype)
        cache = sequence_forward(self.eq, X, h0, c0, self._weights(), zone=zone)
        self._save_for_backward((cache, batched))
        h1 = cache.S[1].reshape(state_shape).copy()
        if self.eq.has_cell:
            return h1, cache.C[1].reshape(state_shape).copy()
        return h1

    def backward(self, dh=None, dc=None, retain_graph: bool = False):
        """Gradients wrt ``(x, hx)`` from the gradients wrt the new state(s); parameter
        gradients are accumulated. LSTMCell: ``backward(dh, dc)`` returns ``(dx, (dh, dc))``."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a forward() first: there "
                               "is no saved step to differentiate (backward() frees what "
                               "forward() kept: one backward per forward, or "
                               "backward(..., retain_graph=True); a forward under "
                               "elman.no_grad() saves nothing)")
        cache, batched = self._cache
        N, H = cache.X.shape[1], self.hidden_size
        shape = (N, H) if batched else (H,)
        dh = None if dh is None else check_state("dh", dh, shape, self.dtype).reshape(N, H)
        if dc is not None:
            if not self.eq.has_cell:
                raise TypeError(f"{type(self).__name__}.backward() takes no dc (it has no cell "
                                "state)")
            dc = check_state("dc", dc, shape, self.dtype).reshape(N, H)
        dX, dh0, dc0 = sequence_backward(self.eq, cache, None, dh, dc, self._weights(),
                                         self._weights(grads=True), consume=not retain_graph)
        if not retain_graph:
            self._cache = None             # one backward per forward, as in PyTorch
        x_shape = cache.X.shape[1:] if batched else cache.X.shape[2:]
        dx = dX.reshape(x_shape)
        if self.eq.has_cell:
            return dx, (dh0.reshape(shape), dc0.reshape(shape))
        return dx, dh0.reshape(shape)


def summed_biases(w: Weights, H: int, out=None):
    """``bias_ih + bias_hh`` (into ``out`` where given), or None without biases: the input
    projection's bias of a cell whose two biases act on the same pre-activations (RNN,
    LSTM)."""
    return None if "bias_ih" not in w else np.add(w["bias_ih"], w["bias_hh"], out=out)
