"""A small no-grad call's plan: what a layer decided for one call signature, kept for the next.

A streaming caller calls a layer with the same shapes thousands of times: one step (or a few)
of one sequence, ``eval()``, under :func:`elman.no_grad`, the state carried. Such a call does
1-5 us of compiled work, and before this plan its Python took twice that: about forty small
steps (the input's and the states' checks, the choice between the pair, lean and general
paths, the kernels' lookup, the sizes' arithmetic), each 0.05-0.8 us, and each answering the
same way as at the call before. A :class:`LeanPlan` is those answers, made by the first call
that takes the lean path (:meth:`elman.recurrent.RecurrentLayer._forward_lean`) or the pair
path (:meth:`elman.recurrent.RecurrentLayer._forward_pair`) and kept by the layer; a later
call whose input and states match it exactly goes straight to that path.

What may change between calls is checked at every call, never assumed:

- the input and the states: the same shapes, dtype and C-contiguous NumPy arrays as the plan's
  (anything else, even a list, goes the whole way through the layer's checks, which convert it
  or name what is wrong);
- the layer's mode (``training``, set by ``train()``/``eval()`` without ``__setattr__``), the
  fast path's switch (:func:`elman.fast.use`), the grad mode and ``lengths`` (the caller
  checks those two);
- every other attribute of the layer is assigned through ``__setattr__``, which drops the plan
  (:meth:`elman.recurrent.RecurrentLayer.__setattr__`): a changed ``dropout``,
  ``batch_first`` or a replaced parameter makes the next call plan afresh;
- the weights themselves are read from the parameters at every call, so values changed in
  place (an optimizer step, ``load_state_dict``) are always seen.

A plan is made outside :func:`elman.threads.concurrently` only (whose pinned BLAS answers
:func:`elman.threads.one_thread_product` differently). The choices that depend on the moment
the plan makes at each call, from what it found out once:

- a unidirectional stack of one sequence that may run its layers in a pipeline on two threads
  (:func:`elman.timeloop.pipes_layers`, kept): whether two threads are free now;
- a batch of one of :data:`elman.timeloop.PAIR_MIN_STEPS` steps or more, at the sizes where
  its steps run on two threads (:func:`elman.timeloop.pair_size_rule`, kept): whether two
  threads are free now, and where either way may be faster, which one the layer's measured
  choice picks (:meth:`elman.recurrent.RecurrentLayer._pair_way`, timed as the layer's own
  calls are); else, as below;
- whether a bidirectional stack runs its directions at once
  (:func:`elman.timeloop.stack_forward_pair`): two threads free, or else the directions in
  turn where the lean path takes the call by itself;

and where none of its ways applies now, the plan steps aside (the whole forward decides).

Why the batch of one too: a streaming user's whole sequence at H = 128 (50 steps) is 150-300
us of compiled work, and the layer's checks and choices around it were a fixed 25-35 us more
than the compiled calls' own (slopes over T = 20 and 150: a GRU's call 50-56 us at T = 0,
its compiled calls alone 17-32; onnxruntime's session 17-23). Planned, in one process,
alternating, medians of 40 (T = 50, batch 1, H = 128, on the Intel Xeon of 2026-12-06): GRU
272 -> 242 us, two layers 437 -> 406, LSTM 326 -> 305, two layers 687 -> 656.
"""
from __future__ import annotations

import operator
import time

import numpy as np

from . import fast, threads, timeloop
from .frozen import immutable_key

__all__ = ["LeanPlan"]


def _ready(value, shape: tuple, dtype) -> bool:
    """Whether ``value`` is already what the checks would return: a C-contiguous ndarray of
    ``dtype`` and exactly ``shape`` (the checks' own first test, plus the shape)."""
    return value.__class__ is np.ndarray and value.shape == shape and value.dtype == dtype \
        and value.flags.c_contiguous


_data = operator.attrgetter("data")     # (a parameter's array)


def _no_plan():
    """What a copied :class:`LeanPlan` becomes: none."""
    return None


class LeanPlan:
    """The lean path's answers for calls of one signature: input ``shape`` (as the caller
    passes it), the layer's dtype and mode, and initial states given or not (``with_states``).
    ``kernels``: the cell's compiled loops. Call it as the layer's ``forward`` would be
    called; it returns the layer's result, or None where the call is not this plan's (the
    caller then runs the whole forward)."""

    __slots__ = ("shape", "dtype", "training", "kernels", "batched", "batch_first", "steps",
                 "rows", "with_states", "h_shape", "c_shape", "h_caller", "c_caller", "eq",
                 "whole", "stack", "pairs", "alone", "directions", "params", "schedule",
                 "pair_rule", "pinned_whole", "keeps", "pipes", "flat", "kept", "keepable",
                 "hidden")

    def __reduce__(self):
        """A copy of the layer (``copy.deepcopy``, and so :func:`elman.freeze`; any
        serialisation through ``__reduce__``) holds no plan: a plan holds the kernel module and
        its compiled functions, which do not copy. The copy's next call makes its own."""
        return _no_plan, ()

    def __init__(self, layer, shape: tuple, batched: bool, with_states: bool, kernels):
        self.shape, self.dtype, self.training = shape, layer.dtype, layer.training
        self.kernels, self.batched, self.batch_first = kernels, batched, layer.batch_first
        self.steps, self.rows = (shape[1], shape[0]) if batched and layer.batch_first else \
            (shape[0], shape[1] if batched else 1)
        self.with_states = with_states
        LD = layer.num_layers * (2 if layer.bidirectional else 1)
        self.h_shape = (LD, self.rows, layer.proj_size or layer.hidden_size)
        self.c_shape = (LD, self.rows, layer.hidden_size) if layer.eq.has_cell else None
        # the states as the caller passes them: (L*D, N, width), or (L*D, width) unbatched
        self.h_caller = self.h_shape if batched else (LD, self.h_shape[2])
        self.c_caller = None if self.c_shape is None else \
            self.c_shape if batched else (LD, self.c_shape[2])
        # the compiled call that runs the whole call, found here once: one layer-direction's
        # (timeloop.lean_whole), else the whole stack's (timeloop.lean_stack); with the
        # parameters by layer-direction as (the cell's name, Param) pairs, and the schedule
        self.eq, self.directions = layer.eq, 2 if layer.bidirectional else 1
        GH, H, I = layer.eq.gates * layer.hidden_size, layer.hidden_size, shape[-1]
        self.params = [[(name, layer._params[attribute]) for name, attribute in names.items()]
                       for names in layer._names]
        self.flat = [param for params in self.params for _, param in params]
        # a short call's compiled operands, kept while the parameters hold the same arrays:
        # (those arrays, the biases remade at each call, the operands); see _kept_operands
        self.kept = None
        eq_class = vars(type(layer.eq))
        self.keepable = self.rows == 1 and "keeps_operands" in eq_class \
            and "projection_bias" in eq_class and layer.eq.keeps_operands()
        self.hidden = layer.hidden_size
        self.whole = self.stack = None
        # a bidirectional stack's directions at once where two threads are free at the call;
        # else in turn, where the lean path takes the call by itself (else: not the plan's)
        K = layer.eq.recurrent_gates * H
        self.pairs = self.directions == 2 and timeloop.pairs_directions(
            kernels, self.steps, self.rows, K, H)
        self.alone = timeloop.runs_lean(kernels, self.steps, self.rows, K, H, self.directions)
        # a batch of one whose steps may run on two threads: the rule but for the moment's
        # question; and the one-thread way's compiled call (BLAS held to one thread for it)
        self.pair_rule = None if not layer._masks_nothing() else timeloop.pair_size_rule(
            layer.eq, kernels, self.steps, self.rows, H, self.dtype, self.directions)
        self.pinned_whole = None
        # whether a call keeps W_hh's panels (timeloop.kept_packs: a batch of one, long enough)
        self.keeps = timeloop.kept_packs([], self.steps, self.rows) is not None
        # a unidirectional stack of one sequence: its layers in a pipeline, where two threads
        # are free at the call
        self.pipes = layer._masks_nothing() and timeloop.pipes_layers(
            layer.eq, kernels, self.steps, self.rows, layer.num_layers, self.directions, H,
            self.dtype)
        if LD == 1:
            self.whole = timeloop.lean_whole(kernels, self.steps, self.rows, GH, I)
            self.pinned_whole = timeloop.lean_whole(kernels, self.steps, self.rows, GH, I, True)
            self.schedule = timeloop.full_schedule(self.steps, self.rows, False)
        else:
            self.stack = timeloop.lean_stack(kernels, self.steps, self.rows, GH, I,
                                             self.directions, H)

    @classmethod
    def make(cls, layer, shape: tuple, batched: bool, hx, kernels) -> "LeanPlan | None":
        """The plan of a call that took the lean path with input ``shape`` and states ``hx``
        (as the caller passed them, after the layer's checks), or None where the checks would
        have converted the states (another dtype, a view): a plan that every such call misses
        would only cost its making at every call. (Cheap tests first, for that reason.)"""
        if hx is not None:
            for state in (hx if hx.__class__ in (tuple, list) else (hx,)):
                if not (state.__class__ is np.ndarray and state.dtype == layer.dtype
                        and state.flags.c_contiguous):
                    return None
        plan = cls(layer, shape, batched, hx is not None, kernels)
        if not (plan.pipes or plan.pair_rule or plan.pairs or plan.alone):
            return None                             # (no way of its own: it would only step aside)
        return plan if plan._states(hx) is not None else None

    @classmethod
    def applies(cls) -> bool:
        """Whether calls may be planned now (see the module docstring)."""
        return not threads.pinned()

    def _states(self, hx):
        """``(h0, c0)`` as (L*D, N, width) arrays for a call of this plan, or None."""
        if hx is None:
            if self.with_states:
                return None
            return np.zeros(self.h_shape, self.dtype), \
                None if self.c_shape is None else np.zeros(self.c_shape, self.dtype)
        if not self.with_states:
            return None
        if self.c_shape is None:
            if not _ready(hx, self.h_caller, self.dtype):
                return None
            return (hx if self.batched else hx.reshape(self.h_shape)), None
        if hx.__class__ not in (tuple, list) or len(hx) != 2:
            return None
        h, c = hx
        if not (_ready(h, self.h_caller, self.dtype) and _ready(c, self.c_caller, self.dtype)):
            return None
        if self.batched:
            return h, c
        return h.reshape(self.h_shape), c.reshape(self.c_shape)

    def __call__(self, layer, x, hx):
        if not (_ready(x, self.shape, self.dtype) and layer.training == self.training
                and fast.enabled()):
            return None
        if layer.stateful:
            hx = layer._carry_in(hx, self.rows, self.batched)
        states = self._states(hx)
        if states is None:
            return None
        free = (self.pipes or self.pair_rule or self.pairs) and threads.two_threads_free()
        if self.pipes and free:
            layer._release_cache()
            result = timeloop.stack_forward_pipe(self.eq, self.kernels, self._inputs(x),
                                                 *states, self._weights(), layer._workspaces)
            if result is not None:
                return layer._finish(*result, None, self.rows, self.batched)
        if self.pair_rule and free:
            kernels, way = layer._pair_way(self.kernels, self.pair_rule)
            if kernels is not None:
                return self._pair_way(layer, x, states, way)
        pair = self.pairs and free
        if not (pair or self.alone):
            return None
        X = self._inputs(x)
        layer._release_cache()
        result = None                        # (None where a parameter array is unusual)
        spaces = layer._workspaces           # (where a batch of one keeps its packed W_hh)
        if self.whole is not None:
            result = self._one(X, *states, spaces[0])
        elif pair or self.stack is not None:
            operands = self._kept_operands()
            weights = None if operands is not None else self._weights()
            if pair:
                result = timeloop.stack_forward_pair(self.eq, self.kernels, X, *states,
                                                     weights, spaces, operands)
            else:
                result = timeloop.stack_forward_lean(self.eq, self.kernels, X, *states,
                                                     weights, self.directions, self.stack,
                                                     spaces, operands)
        if result is None:
            result = layer._forward_lean(self.kernels, X, *states)
        return layer._finish(*result, None, self.rows, self.batched)

    def _inputs(self, x):
        """The input as the layer's loops take it, (T, N, I)."""
        if not self.batched:
            return x[:, None, :]
        if self.batch_first:
            return np.ascontiguousarray(x.transpose(1, 0, 2))
        return x

    def _pair_way(self, layer, x, states, way):
        """A batch of one's call as the layer's forward runs it where the pair rule applies
        (:meth:`elman.recurrent.RecurrentLayer.forward`): ``way`` None or 1, every step on two
        threads; 0, the lean path on one thread (BLAS held to it), timed either way where the
        layer measures (``way`` not None)."""
        timed = None if way is None else (way, time.perf_counter(), self.steps)
        X = self._inputs(x)
        layer._release_cache()
        if way == 0:
            with threads.one_blas_thread():
                if self.pinned_whole is not None:
                    result = self._one(X, *states, layer._workspaces[0], self.pinned_whole)
                else:
                    result = layer._forward_lean(self.kernels, X, *states)
        else:
            result = layer._forward_pair(self.kernels, X, *states)
        return layer._finish(*result, None, self.rows, self.batched, timed)

    def _weights(self) -> list:
        """Every layer-direction's arrays by the cell's names, read now."""
        return [{name: param.data for name, param in params} for params in self.params]

    def _kept_operands(self):
        """The compiled call's operands (:func:`elman.timeloop.lean_operands` of the one
        layer-direction, or :func:`elman.timeloop.stack_operands` of them all) for a short
        call (no packings kept), made at the plan's first such call and kept while every
        parameter holds the same array. Kept:

        - for a frozen module (:func:`elman.freeze`: every parameter a read-only view of
          immutable memory): nothing they are made of can change;
        - for a batch of one of a cell that says its operands keep
          (:meth:`elman.cells.base.CellEquations.keeps_operands`: RNN, LSTM, GRU with
          ``reset_after``): they are views of the parameters (the weights, ``W_hh^T``,
          ``b_hn``), which see any change made in place, or the size's constants; but the
          input projection's bias, the sum of the two biases, is remade into the kept array
          at every call (:meth:`elman.cells.base.CellEquations.projection_bias`). Views the
          plan made, each of them (``W_ih`` too, which the operands hold as it is): a
          parameter's array made read-only later leaves them writeable, so they keep the one
          numba type the compiled call was made for (a read-only array in one entry of a
          stack's tuples would not compile).

        None for any other module or call (the operands are then made at every call, from the
        weights as they are then).

        Why: a streaming caller's short call of a stack spent more in Python making them than
        in its compiled loops (LSTM, two layers, (1, 3, 3, 64): 8-12 us of 33-41, where
        onnxruntime's whole session took 25-37)."""
        if self.keeps:
            return None
        kept = self.kept
        if kept is not None:
            arrays, refresh, operands = kept
            if all(map(operator.is_, map(_data, self.flat), arrays)):
                for w, bias in refresh:
                    self.eq.projection_bias(w, self.hidden, bias)
                return operands
            self.kept = None
        writeable = self.flat[0].data.flags.writeable
        if writeable and not self.keepable:   # (the usual module of a cell that does not keep:
            return None                       # nothing to build, every call)
        arrays = [param.data for param in self.flat]
        frozen = not writeable and all(immutable_key(array) is not None for array in arrays)
        if not (frozen or self.keepable):
            return None
        weights = self._weights()
        operands = timeloop.lean_operands(self.eq, self.kernels, weights[0], self.steps,
                                          self.rows) if self.whole is not None else \
            timeloop.stack_operands(self.eq, self.kernels, weights, self.steps, self.rows)
        if operands is None or not (frozen or all(a.flags.writeable for a in arrays)):
            return operands
        if self.whole is not None:
            biases = [operands[1]]
            operands = (operands[0].view(),) + operands[1:]
        else:
            biases = operands[1][:len(weights)]
            operands = (tuple(W.view() for W in operands[0]),) + operands[1:]
        refresh = [] if frozen else [(w, bias) for w, bias in zip(weights, biases)
                                     if "bias_ih" in w]
        self.kept = arrays, refresh, operands
        return operands

    def _one(self, X, h0, c0, workspace, whole=None):
        """``(out, h_n, c_n)`` of a layer of one direction: :func:`elman.timeloop.
        sequence_forward_lean`'s one compiled call (``whole``, else the plan's), with what it
        would find out first (the weights by name, the schedule, whether that call applies)
        found by the plan; a batch of one's packed ``W_hh`` kept in ``workspace``
        (:func:`elman.timeloop.kept_packs`)."""
        threads.small_work_starts()
        run = whole or self.whole
        if not self.keeps:               # (a streaming caller's short calls: the plain way)
            operands = self._kept_operands()
            # (made now: with a batch's forward packing, where it packs, timeloop.holding_packs)
            with timeloop.holding_packs([workspace] if operands is None else [], self.steps,
                                        self.rows) as packs:
                if operands is None:
                    operands = timeloop.lean_operands(
                        self.eq, self.kernels,
                        {name: param.data for name, param in self.params[0]}, self.steps,
                        self.rows, packs and packs[0])
                S, C = run(self.eq, X, h0[0], None if c0 is None else c0[0], *operands,
                           self.schedule)
            return timeloop.lean_outputs(S, C)
        w = {name: param.data for name, param in self.params[0]}
        h, c = h0[0], None if c0 is None else c0[0]
        with timeloop.holding_packs([workspace], self.steps, self.rows) as packs:
            S, C = timeloop.lean_call(
                lambda *operands: run(self.eq, X, h, c, *operands, self.schedule),
                self.eq, self.kernels, w, self.steps, self.rows, packs[0])
        return timeloop.lean_outputs(S, C)
