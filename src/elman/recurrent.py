"""Recurrent layers: ``RNN``, ``GRU``, ``LSTM`` with the arguments, shapes, state layout and
parameter names of their ``torch.nn`` twins, over NumPy arrays.

A layer is a stack of ``num_layers`` x ``D`` (D = 2 if bidirectional) runs of
:func:`elman.timeloop.sequence_forward`. Layer ``k`` reads the concatenated outputs of both
directions of layer ``k-1`` (after inter-layer dropout in training mode). Shapes, with
``P = proj_size or hidden_size``::

    x        (T, N, I)  or (N, T, I) with batch_first, or (T, I) unbatched
    out      (T, N, D*P)            the last layer's hidden state at every step
    h0, h_n  (D*num_layers, N, P)   indexed layer * D + direction
    c0, c_n  (D*num_layers, N, H)   LSTM only

``lengths`` (one int per sequence, 1..T) gives right-padded variable-length batches the meaning
of ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` followed by ``pad_packed_sequence``
with ``total_length=T``: outputs past a sequence's end are zero, ``h_n``/``c_n`` hold the states at
its last valid step, and the reverse direction starts at that step.

``backward(dout, dstate)`` returns ``(dx, dstate0)`` for the last forward call and adds the
parameter gradients into ``Param.grad``; then it frees what that forward kept (one backward per
forward, as in PyTorch).

``stateful=True`` (Keras' meaning, :mod:`elman.stateful`): a call given no ``hx`` starts from
the final states of the call before, row by row; ``reset_states()`` forgets them.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from . import _validate, fast, registry, threads, timeloop
from .cells.base import check_input, check_state, make_parameters, parameter_count
from .cells.gru import GRUEquations
from .cells.layer_norm import LayerNormGRUEquations, LayerNormLSTMEquations, LayerNormRNNEquations
from .cells.lstm import LSTMEquations
from .cells.peephole_lstm import PeepholeLSTMEquations
from .cells.rnn import RNNEquations
from .grad_mode import is_grad_enabled
from .lean_plan import LeanPlan
from .measured_choice import MeasuredChoice
from .module import Module
from .stateful import StatefulMixin
from .timeloop import (InputGradient, RowBlocks, RowSplit, Weights, Workspace, Zoneout,
                       backward_directions, directions_on_partner, final_states,
                       forward_directions, forward_into, lean_outputs, output_view, pair_rule,
                       pairs_directions, pipes_layers, release, rows_rule, runs_lean,
                       sequence_backward, sequence_forward, sequence_forward_lean,
                       sequence_forward_pair, sequence_forward_rows, shared_directions,
                       shares_states, split_rows, stack_forward_lean, stack_forward_pair,
                       stack_forward_pipe, stack_forward_rows)

__all__ = ["RNN", "GRU", "LSTM", "RecurrentLayer"]


class RecurrentLayer(StatefulMixin, Module):
    """The stack of layers and directions shared by :class:`RNN`, :class:`GRU` and :class:`LSTM`.

    Sub-classes only choose the cell equations; everything here is the same for all cells,
    including the regularisers beyond PyTorch's ``dropout`` (between layers):

    - ``input_dropout=p``, ``recurrent_dropout=p``: Keras' variational dropout, one mask per
      sequence and layer-direction on the layer's input, and on ``h_{t-1}`` where it enters
      ``W_hh`` (Gal & Ghahramani 2016), scaled by 1/(1-p), in training only;
    - ``zoneout=p`` (Krueger et al. 2017): after each step every unit of ``h`` (and of ``c``,
      LSTM) keeps its previous value with probability p, a fresh draw per step, unit,
      sequence and layer-direction (h and c drawn separately)::

          training    h_t = a_t * h_{t-1} + (1 - a_t) * h~_t,   a_t ~ Bernoulli(p)
                      c_t = b_t * c_{t-1} + (1 - b_t) * c~_t,   b_t ~ Bernoulli(p)
          evaluation  h_t = p * h_{t-1} + (1 - p) * h~_t,   c_t = p * c_{t-1} + (1 - p) * c~_t

      where ``h~_t``, ``c~_t`` are the cell's step from the (zoned) ``h_{t-1}``, ``c_{t-1}``
      (the LSTM's ``h~_t = o_t * tanh(c~_t)``, from the new, un-zoned ``c~_t``; with
      ``proj_size`` the projected ``h``). Padded steps (``lengths``) carry the state as
      without it. The masks come from the layer's generator (``seed``).
    """

    def __init__(self, eq, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32, seed=None,
                 recurrent_dropout=0.0, input_dropout=0.0, zoneout=0.0, stateful=False):
        super().__init__()
        self._plan = None                  # elman.lean_plan: small no-grad calls' answers
        self.eq = eq
        self._stateful_init(stateful)      # elman.stateful: states carried between calls
        stack_arguments(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                        bidirectional, dtype, seed)
        self.recurrent_dropout = _validate.rate_below_one("recurrent_dropout", recurrent_dropout)
        self.input_dropout = _validate.rate_below_one("input_dropout", input_dropout)
        self.zoneout = _validate.rate_below_one("zoneout", zoneout)
        if self.recurrent_dropout and eq.recurrent_gates < eq.gates:
            raise ValueError(f"recurrent_dropout is not available for {type(self).__name__} "
                             f"with reset_after=False (its candidate reads r * h_prev through "
                             f"a product of its own); use reset_after=True")
        self.proj_size = _validate.positive_int("proj_size", proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({self.hidden_size}), "
                             f"got {self.proj_size}")
        D = 2 if self.bidirectional else 1
        H = self.hidden_size
        P = self.proj_size or H

        def specs(layer_in):       # one layer-direction's parameters, as the cell declares them
            return eq.parameters(layer_in, H, self.proj_size, self.bias)
        # the first layer reads the input, the others D*P features (in closed form: num_layers
        # may be absurd, and a loop over it would spin)
        first, later = parameter_count(specs(self.input_size)), parameter_count(specs(D * P))
        _validate.affordable(type(self).__name__,
                             D * (first + (self.num_layers - 1) * later), self.dtype,
                             {"input_size": self.input_size, "hidden_size": H,
                              "num_layers": self.num_layers})
        # per (layer, direction): {the cell's name for a parameter: this layer's attribute}
        self._names = []
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else D * P
            for direction in range(D):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                made = make_parameters(specs(layer_in), H, self.dtype, self._rng)
                for name, param in made.items():
                    setattr(self, name + sfx, param)
                self._names.append({name: name + sfx for name in made})
        self._cache = None
        # per layer-direction: internal arrays reused from call to call (timeloop.Workspace)
        self._workspaces = [Workspace() for _ in self._names]
        # a batch of one on one thread (way 0) or two (way 1), at the sizes where either may
        # be faster (timeloop.pair_rule "measure"): timed as the calls run
        self._pair_choice = MeasuredChoice()

    def __setattr__(self, name, value):
        # every public attribute (a rate, batch_first, a parameter replaced) may change what
        # a call does: the kept plan of small no-grad calls goes (elman.lean_plan)
        super().__setattr__(name, value)
        if name[0] != "_":
            object.__setattr__(self, "_plan", None)

    # -- description -----------------------------------------------------------------------
    def extra_repr(self) -> str:
        return layer_repr(self, (("proj_size", 0), ("recurrent_dropout", 0.0),
                                 ("input_dropout", 0.0), ("zoneout", 0.0), ("layer_norm", False),
                                 ("stateful", False)))

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values."""
        cfg = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                   num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                   dropout=self.dropout, bidirectional=self.bidirectional,
                   dtype=self.dtype.name)
        for name in ("recurrent_dropout", "input_dropout", "zoneout", "layer_norm",  # if used:
                     "stateful"):
            if getattr(self, name, False):                  # older files and configs stay the same
                cfg[name] = getattr(self, name)
        return cfg

    @property
    def _D(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _P(self) -> int:
        return self.proj_size or self.hidden_size

    def _weights(self, index: int, grads: bool = False) -> Weights:
        """Layer-direction ``index``'s arrays by the cell's parameter names."""
        params = self._params                   # (a dict lookup: cheaper than getattr)
        if grads:
            return {name: params[attribute].grad
                    for name, attribute in self._names[index].items()}
        return {name: params[attribute].data for name, attribute in self._names[index].items()}

    # -- forward ---------------------------------------------------------------------------
    def _split_hx(self, hx, N: int, batched: bool):
        """(h0, c0) as (L*D, N, P) / (L*D, N, H) arrays (zeros when hx is None)."""
        LD, P, H = self.num_layers * (2 if self.bidirectional else 1), \
            self.proj_size or self.hidden_size, self.hidden_size
        h_shape = (LD, N, P)
        c_shape = (LD, N, H)
        if self.eq.has_cell:
            if hx is None:
                return np.zeros(h_shape, self.dtype), np.zeros(c_shape, self.dtype)
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx of {type(self).__name__} must be a tuple (h_0, c_0), "
                                f"got {type(hx).__name__}")
            return _state("h_0", hx[0], h_shape, batched, self.dtype), \
                _state("c_0", hx[1], c_shape, batched, self.dtype)
        if hx is None:
            return np.zeros(h_shape, self.dtype), None
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx of {type(self).__name__} must be one array h_0, got a "
                            f"{type(hx).__name__}")
        return _state("h_0", hx, h_shape, batched, self.dtype), None

    def forward(self, x, hx=None, lengths=None):
        """Run the stack. Returns ``(out, h_n)`` (GRU, RNN) or ``(out, (h_n, c_n))`` (LSTM).

        As in PyTorch, a batch of no sequences (N = 0) gives empty outputs and states (and
        zero parameter gradients); an input of no time steps is refused."""
        plan = self._plan
        if plan is not None and lengths is None and not is_grad_enabled():
            result = plan(self, x, hx)          # (None: this call is not the plan's)
            if result is not None:
                return result
        given = x
        x, batched = check_input(x, self.input_size, self.dtype, 3,
                                 time_axis=1 if self.batch_first else 0)
        if not batched:
            X = x[:, None, :]
        elif self.batch_first:
            X = np.ascontiguousarray(x.transpose(1, 0, 2))
        else:
            X = x
        T, N, _ = X.shape
        hx = self._carry_in(hx, N, batched)           # stateful: the last call's final states
        h0, c0 = self._split_hx(hx, N, batched)
        timed = None
        if lengths is None and not is_grad_enabled():
            kernels = self._pipe_kernels(T, N)
            if kernels is not None:
                result = self._forward_pipe(kernels, X, h0, c0)
                if result is not None:
                    self._keep_plan(x is given, x.shape, batched, hx, kernels)
                    return self._finish(*result, None, N, batched)
            kernels, way = self._pair_kernels(T, N)
            if way is not None:           # (way, start, steps) for self._pair_choice
                timed = (way, time.perf_counter(), T)
            if kernels is not None:
                self._keep_plan(x is given, x.shape, batched, hx, kernels)
                self._release_cache()     # (as below: a forward replaces what the last kept)
                if way == 0:
                    # the one-thread way of a call timed against two: the lean path at any
                    # length (one sequence, one direction: no row blocks to miss) with BLAS
                    # held to one thread, whose own pool would otherwise spin after each call
                    # beside the next call's two threads (measured: a two-layer LSTM at
                    # H = 128 took 830-1160 us a call with the ways in turn, 526-587 with one
                    # thread always; held, 455-488; a GRU at H = 128 and T = 200, whose
                    # projection BLAS ran on its pool, 821 us against 609 and 444 either way)
                    with threads.one_blas_thread():
                        out, h_n, c_n = self._forward_lean(kernels, X, h0, c0)
                else:
                    out, h_n, c_n = self._forward_pair(kernels, X, h0, c0)
                return self._finish(out, h_n, c_n, None, N, batched, timed)
            lean, pair = self._lean_kernels(T, N)
            if lean is not None:
                self._keep_plan(x is given, x.shape, batched, hx, lean)
                self._release_cache()
                out, h_n, c_n = self._forward_lean(lean, X, h0, c0, pair)
                return self._finish(out, h_n, c_n, None, N, batched, timed)
            kernels = self._rows_kernels(T, N)
            if kernels is not None:
                result = stack_forward_rows(self.eq, kernels, X, h0, c0,
                                            [self._weights(k) for k in range(len(h0))],
                                            self._D, self._workspaces)
                if result is not None:
                    self._release_cache()
                    return self._finish(*result, None, N, batched, timed)
        D = self._D

        order = inverse = active = None
        if lengths is not None:
            if not batched:
                raise ValueError("lengths is only supported for batched input (T, N, I); got "
                                 f"unbatched input of shape {x.shape}")
            lengths = _validate.lengths(lengths, N, T, type(self).__name__)
            order = np.argsort(-lengths, kind="stable")
            if np.all(order == np.arange(N)):
                order = None                           # already longest first: no copies
            else:
                inverse = np.argsort(order)
                X, h0 = X[:, order], h0[:, order]
                c0 = None if c0 is None else c0[:, order]
                lengths = lengths[order]
            active = np.count_nonzero(lengths[:, None] > np.arange(T), axis=0)
            if active[-1] == N:
                lengths = active = None                # every sequence is full length
            else:
                # Padding is never read as data, but whole-sequence GEMMs multiply it by zero
                # gradients: make it zero so NaN or inf padding cannot leak into dW_ih.
                X = np.where(np.arange(T)[:, None, None] < lengths[None, :, None], X, 0)

        self._release_cache()             # a forward nobody differentiated: reuse its arrays
        caches, masks = [], []
        h_n = np.empty((self.num_layers * D, N, self._P), self.dtype)
        c_n = None if c0 is None else np.empty((self.num_layers * D, N, self.hidden_size),
                                               self.dtype)
        layer_in = X
        # Keras' variational dropout: one mask per sequence and layer-direction, the same at
        # every step, on the layer's input (input_dropout) and on h_prev where it enters W_hh
        # (recurrent_dropout); drawn in the caller's row order, then sorted like the batch;
        # zoneout's per-step masks after them
        in_masks, h_masks = [], []
        # the work of a direction's recurrent GEMMs, T steps of (N x P) @ (P x K)
        K = self.eq.recurrent_gates * self.hidden_size
        flops = 2.0 * T * N * self._P * K
        # (one direction: its batch's rows in two blocks at once where that pays: timeloop)
        split = D == 1 and split_rows(self.eq, self.dtype, T, N, K, self._P)
        forward = sequence_forward_rows if split else sequence_forward
        # A split stack's inner layer hands its row blocks' outputs to the next layer's blocks
        # as they are (timeloop.sequence_forward_rows, keep_blocks), where no mask comes
        # between them (dropout between layers, input_dropout on a layer's input)
        chain = split and not (self.training and (self.dropout > 0 or self.input_dropout > 0))
        # A bidirectional layer's directions write their states into one array whose steps
        # are the layer's output, where the cell's loops take them so (timeloop.shares_states;
        # not with lengths: the output's padding is zeroed in place, the states are kept; not
        # for a batch of one, whose copy is a few rows and whose step's product on a plane
        # of the shared array would leave the kernels' own matrix-vector loop for BLAS's)
        shared = D == 2 and N > 1 and lengths is None and shares_states(self.eq, self.dtype)
        # An inner layer's output never reaches the caller: its array comes from the layer's
        # workspace and goes back with the caches (a fresh one of 52 MB at (128, 200, 256,
        # 512) cost its page faults at every call); the last layer's output is the caller's.
        inner = []
        for layer in range(self.num_layers):
            calls = []
            last = layer == self.num_layers - 1
            target = None
            shape = (T + 2, N, D, self._P) if shared else (T, N, D * self._P)
            if not last and (D == 2 or split) and not chain:
                target = self._workspaces[layer * D].take("layer_out", shape, self.dtype)
                inner.append((self._workspaces[layer * D], target))
            if shared:                          # (the directions' states, then the output)
                *planes, both = shared_directions(target if target is not None
                                                  else np.empty(shape, self.dtype))
            else:
                # two directions copy their outputs into the halves of one array
                # (forward_into)
                both = None if D == 1 else target if target is not None else \
                    np.empty(shape, self.dtype)
            for direction in range(D):
                k = layer * D + direction
                x_mask = h_mask = zone = None
                if self.training:                # (tested first: a streaming caller's every
                    # call goes past; the width from the sizes: layer_in may be a RowSplit)
                    width = self.input_size if layer == 0 else D * self._P
                    x_mask = self._variational_mask(self.input_dropout, (N, width), order)
                    h_mask = self._variational_mask(self.recurrent_dropout, (N, self._P), order)
                if self.zoneout:
                    zone = Zoneout.draw(self.zoneout, self.training, self._rng, (T, N, self._P),
                                        self.hidden_size if self.eq.has_cell else None,
                                        self.dtype, order)
                in_masks.append(x_mask)
                h_masks.append(h_mask)
                into, where = (), {}
                if shared:
                    where = dict(states=planes[direction])
                elif D == 2:
                    into = (forward_into, both[:, :, direction * self._P:
                                              (direction + 1) * self._P])
                elif split:
                    where = dict(out=target) if last or not chain else dict(keep_blocks=True)
                elif not last:                # the states themselves are the inner output
                    where = dict(states_internal=True)
                arguments = dict(
                    eq=self.eq, X=layer_in if x_mask is None else layer_in * x_mask, h0=h0[k],
                    c0=None if c0 is None else c0[k], w=self._weights(k), lengths=lengths,
                    active=active, reverse=bool(direction), workspace=self._workspaces[k],
                    h_mask=h_mask, zone=zone, **where)
                calls.append(arguments if shared else
                             functools.partial(*into, forward, **arguments))
            # (a bidirectional layer's two directions run at once where that pays, and where
            # they share their states each as one compiled call: timeloop)
            for direction, cache in enumerate(forward_directions(self.eq, self.dtype, flops,
                                                                 calls)):
                k = layer * D + direction
                caches.append(cache)
                final_states(cache, lengths, h_n[k], None if c_n is None else c_n[k])
            if chain and not last:              # (no dropout mask: see chain)
                masks.append(None)
                layer_in = caches[-1]           # (its blocks' outputs, for the next layer's)
                continue
            if D == 1:
                out = output_view(caches[-1])
            else:
                out = both
                if lengths is not None:
                    # padded steps of the reverse direction hold its planted initial state
                    out = _zero_padding(out, lengths)
            mask = None
            if layer < self.num_layers - 1 and self.training and self.dropout > 0:
                mask = dropout_mask(self._rng, self.dropout, out.shape, self.dtype)
                out = out * mask
            masks.append(mask)
            layer_in = np.ascontiguousarray(out)

        out = layer_in
        if is_grad_enabled():
            self._cache = dict(caches=caches, masks=masks, order=order, inverse=inverse,
                               lengths=lengths, batched=batched, x_shape=x.shape, T=T, N=N,
                               in_masks=in_masks, h_masks=h_masks, inner=inner)
        else:                             # elman.no_grad(): the arrays go back for the next call
            _give_back(caches, inner)
        return self._finish(out, h_n, c_n, inverse, N, batched, timed)

    def _keep_plan(self, kept: bool, shape: tuple, batched: bool, hx, kernels) -> None:
        """Keep the plan of a no-grad call of this signature that took the lean or the pair
        path (:class:`elman.lean_plan.LeanPlan`) where the checks ``kept`` the caller's array
        as it was (else every such call would miss the plan)."""
        if kept and LeanPlan.applies():
            self._plan = LeanPlan.make(self, shape, batched, hx, kernels) or self._plan

    def _finish(self, out, h_n, c_n, inverse, N: int, batched: bool, timed=None):
        """``(out, state)`` in the caller's order and layout; a stateful layer keeps the state.
        A call timed for the layer's choice between one thread and two (``timed``: its way,
        start and steps; see :meth:`_pair_kernels`) records its time per step."""
        if timed is not None:
            way, start, steps = timed
            self._pair_choice.record(way, (time.perf_counter() - start) / steps)
        out, state = self._format_outputs(out, h_n, c_n, inverse, batched)
        if self.stateful:
            self._carry_out(*(state if self.eq.has_cell else (state, None)), N, batched)
        return out, state

    def _masks_nothing(self) -> bool:
        """Whether a call masks nothing and projects nothing (no dropout in training, no
        zoneout, no projection): what the lean and the pair paths need."""
        return not (self.zoneout or self.proj_size or (self.training and (
            self.dropout or self.input_dropout or self.recurrent_dropout)))

    def _pipe_kernels(self, T: int, N: int):
        """The cell's compiled loops where this no-grad call runs its stack's layers in a
        pipeline on two threads now (:func:`elman.timeloop.pipes_layers`, two threads free;
        nothing to mask, no projection), else None. (Its cheapest refusals first.)"""
        if N != 1 or self.num_layers < 2 or self.bidirectional or not self._masks_nothing():
            return None
        kernels = fast.kernels_for(self.eq, self.dtype)
        if pipes_layers(self.eq, kernels, T, N, self.num_layers, 1, self.hidden_size,
                        self.dtype) \
                and threads.two_threads_free():
            return kernels
        return None

    def _forward_pipe(self, kernels, X, h0, c0):
        """``(out, h_n, c_n)`` of :func:`elman.timeloop.stack_forward_pipe` (None where it
        does not apply: see there)."""
        self._release_cache()
        return stack_forward_pipe(self.eq, kernels, X, h0, c0,
                                  [self._weights(k) for k in range(self.num_layers)],
                                  self._workspaces)

    def _pair_kernels(self, T: int, N: int):
        """``(kernels, way)`` for a no-grad call: the cell's compiled loops when the call runs
        on two threads (:meth:`_forward_pair`) or is timed for the layer's choice between one
        thread and two (:func:`elman.timeloop.pair_rule`'s "measure"), else None; ``way`` None
        when the call is not timed, else the way the layer's ``MeasuredChoice`` picked (0: one
        thread, 1: two). (Its two cheapest refusals first: a streaming caller's one-step calls
        ask at every call.)"""
        if N != 1 or T < timeloop.PAIR_MIN_STEPS or not self._masks_nothing():
            return None, None
        kernels = fast.kernels_for(self.eq, self.dtype)
        return self._pair_way(kernels, pair_rule(self.eq, kernels, T, N, self.hidden_size,
                                                 self.dtype, self._D))

    def _pair_way(self, kernels, rule):
        """:meth:`_pair_kernels`'s answer for :func:`elman.timeloop.pair_rule`'s ``rule`` (what
        a plan of such calls, :class:`elman.lean_plan.LeanPlan`, asks too)."""
        if rule == "measure":
            choice = self._pair_choice
            way = choice.pick()
            if way == 0 and not choice.trial:
                # one thread chosen: the partner sleeps at once rather than spin 2 ms beside
                # the calls (and BLAS's threads). Through a trial of one thread it spins on,
                # ready for the chosen pair: the call back to two threads then skips the wake
                # (measured, as shipped at batch 1, H = 128, T = 50, in one process: LSTM 174
                # -> 164-167 us, GRU 128 -> 122, two threads always 156-158 and 119; the
                # one-thread trials took no longer beside the spinning partner, 186-192 us
                # against 197-204)
                fast.pair().rest_partner()
            return kernels, way
        return (kernels if rule == "pair" else None), None

    def _forward_pair(self, kernels, X, h0, c0):
        """``(out, h_n, c_n)`` of one sequence whose every step runs on two threads: each
        layer-direction through :func:`elman.timeloop.sequence_forward_pair`, in turn (a
        reverse direction runs forward over the reversed input; its outputs are reversed
        back into their columns of the layer's output)."""
        D, T, H = self._D, X.shape[0], self.hidden_size
        h_n = np.empty(h0.shape, self.dtype)
        c_n = None if c0 is None else np.empty(c0.shape, self.dtype)
        layer_in = X
        for layer in range(self.num_layers):
            out = None if D == 1 else np.empty((T, 1, D * H), self.dtype)
            for direction in range(D):
                k = layer * D + direction
                S, c_last = sequence_forward_pair(self.eq, kernels,
                                                  layer_in[::-1] if direction else layer_in,
                                                  h0[k:k + 1],
                                                  None if c0 is None else c0[k:k + 1],
                                                  self._weights(k), self._workspaces[k])
                h_n[k] = S[-1]
                if c_last is not None:
                    c_n[k] = c_last[0]
                if out is None:
                    out = S[1:]
                else:
                    out[:, :, direction * H:(direction + 1) * H] = \
                        S[:0:-1] if direction else S[1:]
            layer_in = out
        return layer_in, h_n, c_n

    def _lean_kernels(self, T: int, N: int):
        """``(kernels, pair)``: the cell's compiled loops when this no-grad call may take
        :meth:`_forward_lean` (nothing to mask, no projection: :meth:`_masks_nothing`), and
        whether it runs a bidirectional layer's directions at once there
        (:func:`elman.timeloop.pairs_directions`, two threads free now); else small enough for
        :func:`elman.timeloop.runs_lean`. ``(None, False)`` otherwise."""
        if not self._masks_nothing():
            return None, False
        kernels = fast.kernels_for(self.eq, self.dtype)
        K, H = self.eq.recurrent_gates * self.hidden_size, self.hidden_size
        if self._D == 2 and pairs_directions(kernels, T, N, K, H) and threads.two_threads_free():
            return kernels, True
        return (kernels if runs_lean(kernels, T, N, K, H, self._D) else None), False

    def _rows_kernels(self, T: int, N: int):
        """The cell's compiled loops where this no-grad call runs its whole stack as two row
        blocks at once (:func:`elman.timeloop.rows_rule`, two threads free now; nothing to
        mask, no projection), else None."""
        if N == 1 or self._D != 1 or not self._masks_nothing():
            return None
        kernels = fast.kernels_for(self.eq, self.dtype)
        if rows_rule(self.eq, kernels, self.dtype, T, N,
                     self.eq.recurrent_gates * self.hidden_size, self._P, self._D) \
                and threads.two_threads_free():
            return kernels
        return None

    def _forward_lean(self, kernels, X, h0, c0, pair: bool = False):
        """``(out, h_n, c_n)`` of a small call that keeps nothing (a streaming caller's one-step
        calls, a batch of one): each layer-direction through
        :func:`elman.timeloop.sequence_forward_lean`, without the general path's caches,
        workspaces and row blocks (several as one compiled call where that applies; ``pair``:
        a bidirectional stack's directions at once, :func:`elman.timeloop.stack_forward_pair`).
        Same arithmetic, same results."""
        D, eq = (2 if self.bidirectional else 1), self.eq
        spaces = self._workspaces        # (where a batch of one keeps its packed W_hh)
        if len(h0) == 1:          # one layer, one direction (a streaming caller's usual layer)
            return lean_outputs(*sequence_forward_lean(eq, kernels, X, h0[0],
                                                       None if c0 is None else c0[0],
                                                       self._weights(0), workspace=spaces[0]))
        weights = [self._weights(k) for k in range(len(h0))]
        whole = stack_forward_pair(eq, kernels, X, h0, c0, weights, spaces) if pair else None
        if whole is None:
            whole = stack_forward_lean(eq, kernels, X, h0, c0, weights, D, workspaces=spaces)
        if whole is not None:                     # the whole stack as one compiled call
            return whole
        h_n = np.empty(h0.shape, self.dtype)
        c_n = None if c0 is None else np.empty(c0.shape, self.dtype)
        layer_in = X
        for layer in range(self.num_layers):
            outs = []
            for direction in range(D):
                k = layer * D + direction
                S, C = sequence_forward_lean(eq, kernels, layer_in, h0[k],
                                             None if c0 is None else c0[k], self._weights(k),
                                             bool(direction), spaces[k])
                h_n[k] = S[0] if direction else S[-1]        # (no lengths: the last step)
                if C is not None:
                    c_n[k] = C[0] if direction else C[-1]
                outs.append(S[:-1] if direction else S[1:])
            layer_in = outs[0] if D == 1 else np.concatenate(outs, axis=2)
        return layer_in, h_n, c_n

    def _variational_mask(self, p: float, shape: tuple, order) -> np.ndarray | None:
        """A (N, width) inverted-dropout mask (0 or 1/(1-p)), in training only; rows in the
        batch's processing order (``order`` sorts them longest first)."""
        if not (self.training and p > 0):
            return None
        keep = 1.0 - p
        mask = (self._rng.random(shape) < keep).astype(self.dtype) / self.dtype.type(keep)
        return mask if order is None else mask[order]

    def _format_outputs(self, out, h_n, c_n, inverse, batched):
        if inverse is None and batched and not self.batch_first:     # nothing to reorder
            return (out, (h_n, c_n)) if self.eq.has_cell else (out, h_n)
        out, h_n, c_n = (_to_caller(a, inverse, batched) for a in (out, h_n, c_n))
        if batched and self.batch_first:
            out = out.transpose(1, 0, 2)
        if self.eq.has_cell:
            return out, (h_n, c_n)
        return out, h_n

    def _release_cache(self) -> None:
        """Drop the saved sequences; their internal arrays go back to the workspaces."""
        if self._cache is not None:
            _give_back(self._cache["caches"], self._cache["inner"])
            self._cache = None

    def clear_workspace(self) -> None:
        """Free the arrays kept for reuse between calls (see :class:`elman.timeloop.Workspace`);
        the next call allocates afresh."""
        for ws in self._workspaces:
            ws.clear()

    # -- backward --------------------------------------------------------------------------
    def backward(self, dout=None, dhx=None, input_grad: bool = True, retain_graph: bool = False):
        """Backpropagate the last forward call, then free what it kept (a second backward needs
        a new forward, as in PyTorch), unless ``retain_graph=True``.

        ``dout`` has the shape of ``out``; ``dhx`` the shape of ``h_n`` (or a tuple ``(dh_n,
        dc_n)`` for an LSTM); any of them may be None, meaning zero. Returns ``(dx, dh_0)`` or,
        for an LSTM, ``(dx, (dh_0, dc_0))``, shaped like the inputs of the forward call.
        Parameter gradients are **added** to ``Param.grad``.

        ``input_grad=False`` skips the gradient wrt ``x`` (returned as None) when ``x`` is data,
        as PyTorch does for an input without ``requires_grad``: it saves one GEMM of
        (T*N, G*H) x (G*H, I) per direction of the first layer.
        """
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a forward() first: there "
                               "is no saved sequence to differentiate (backward() frees what "
                               "forward() kept, as PyTorch does: one backward per forward, or "
                               "backward(..., retain_graph=True); a forward under "
                               "elman.no_grad() saves nothing)")
        st = self._cache
        T, N, batched = st["T"], st["N"], st["batched"]
        D, P, H, L = self._D, self._P, self.hidden_size, self.num_layers
        order, inverse = st["order"], st["inverse"]

        if dout is not None:
            if not batched:
                out_shape = (T, D * P)
            else:
                out_shape = (N, T, D * P) if self.batch_first else (T, N, D * P)
            dout = check_state("dout", dout, out_shape, self.dtype)
            if not batched:
                dout = dout[:, None, :]
            elif self.batch_first:
                dout = dout.transpose(1, 0, 2)
            if order is not None:
                dout = dout[:, order]
        dh_n = dc_n = None
        h_shape = (L * D, N, P) if batched else (L * D, P)
        c_shape = (L * D, N, H) if batched else (L * D, H)
        if self.eq.has_cell:
            if dhx is not None:
                if not isinstance(dhx, (tuple, list)) or len(dhx) != 2:
                    raise TypeError(f"dhx of {type(self).__name__} must be a tuple (dh_n, dc_n)"
                                    f" (either may be None), got {type(dhx).__name__}")
                if dhx[0] is not None:
                    dh_n = check_state("dh_n", dhx[0], h_shape, self.dtype).reshape(L * D, N, P)
                if dhx[1] is not None:
                    dc_n = check_state("dc_n", dhx[1], c_shape, self.dtype).reshape(L * D, N, H)
        elif dhx is not None:
            dh_n = check_state("dh_n", dhx, h_shape, self.dtype).reshape(L * D, N, P)
        if order is not None:
            dh_n = None if dh_n is None else dh_n[:, order]
            dc_n = None if dc_n is None else dc_n[:, order]

        dh0 = np.zeros((L * D, N, P), self.dtype)
        dc0 = np.zeros((L * D, N, H), self.dtype) if self.eq.has_cell else None
        dY = dout
        flops = 2.0 * T * N * P * self.eq.recurrent_gates * H    # a direction's recurrent GEMMs
        # An inner layer's input gradient is the gradient wrt the output of the layer below:
        # computed into arrays of the workspaces, given back once that layer's backward has
        # read it (the first layer's is the caller's: a new array)
        spent = []
        # a bidirectional stack's directions small enough to run at once on the partner, each
        # as one compiled call (timeloop.backward_directions), where the sum of an upper
        # layer's two input gradients, which that needs whole, is small too
        fused_directions = D == 2 and L > 1 and T * N * D * P <= FUSED_SUM_MAX_ELEMENTS and \
            directions_on_partner(self.eq, self.dtype, flops)
        for layer in reversed(range(L)):
            calls, targets = [], []
            # a split stack whose layer below kept its output in its row blocks (forward)
            # hands the gradient down the same way, block to block (a RowBlocks)
            below = st["caches"][(layer - 1) * D] if layer > 0 else None
            chained = isinstance(below, RowSplit) and below.out is None
            # a bidirectional layer above another leaves its directions' input-gradient
            # products to the directions below, each taking its own columns of their sum
            # (InputGradient); not where input_dropout masks each direction's input
            # (not where the directions go to the partner as one compiled call each, which
            # needs its input gradient whole: there the sum below is one small array)
            defer = D == 2 and layer > 0 and not fused_directions and \
                all(st["in_masks"][layer * D + d] is None for d in range(D))
            summed = []
            for direction in range(D):
                k = layer * D + direction
                target = None if layer == 0 or chained or defer else \
                    self._workspaces[k].take("layer_dX", (T, N, D * P), self.dtype)
                if target is not None:
                    targets.append(functools.partial(self._workspaces[k].give,
                                                     layer_dX=target))
                elif layer == 0 and D == 2 and input_grad:
                    # the caller's input gradient: the first direction's into a new array, the
                    # second's into one of its workspace, added into the first's below (each
                    # pass then has an array to write into, which its fused form needs)
                    shape = (T, N, self.input_size)
                    target = np.empty(shape, self.dtype) if direction == 0 else \
                        self._workspaces[k].take("input_dX", shape, self.dtype)
                    if direction:
                        summed.append(functools.partial(self._workspaces[k].give,
                                                        input_dX=target))
                arguments = dict(
                    dh_n=None if dh_n is None else dh_n[k],
                    dc_n=None if dc_n is None else dc_n[k], w=self._weights(k),
                    g=self._weights(k, True), input_grad=layer > 0 or input_grad,
                    consume=not retain_graph, dX_out=target, defer_input_grad=defer,
                    **({"keep_blocks": True} if chained else {}))   # (row blocks' only)
                if isinstance(dY, _DirectionsSum):    # (summed on this direction's thread)
                    calls.append(functools.partial(_backward_summed, dY, direction,
                                                   self._workspaces[k], self.eq,
                                                   st["caches"][k], **arguments))
                else:                                 # (sequence_backward's arguments)
                    dY_d = None if dY is None else dY if isinstance(dY, RowBlocks) else \
                        dY[:, :, direction * P:(direction + 1) * P]
                    calls.append(dict(eq=self.eq, cache=st["caches"][k], dY=dY_d,
                                      **arguments))
            # (a bidirectional layer's two directions at once where that pays, each set up
            # here and run as one compiled call where it can: timeloop)
            results = backward_directions(self.eq, self.dtype, flops, calls)
            for give_back in spent:                       # read by the passes just run
                give_back()
            spent = targets
            dX = None
            parts = []
            for direction, (dX_d, dh, dc) in enumerate(results):
                k = layer * D + direction
                x_mask = st["in_masks"][k]
                if dX_d is not None and x_mask is not None:      # the input was x * mask
                    dX_d *= x_mask
                if isinstance(dX_d, RowBlocks):          # (chained: no mask between)
                    dX = dX_d
                    spent.append(dX_d.give_back)
                elif isinstance(dX_d, InputGradient):
                    parts.append(dX_d)                    # (multiplied out below, by columns)
                    spent.append(dX_d.give_back)
                elif dX_d is not None and D == 2 and layer > 0:
                    parts.append(dX_d)                    # (summed below, column by column)
                elif dX_d is not None:    # (its own array: the second direction adds in place)
                    dX = dX_d if dX is None else np.add(dX, dX_d, out=dX)
                dh0[k] = dh
                if dc0 is not None:
                    dc0[k] = dc
            for give_back in summed:                      # (added in above)
                give_back()
            mask = st["masks"][layer - 1] if layer > 0 else None
            if parts and fused_directions:
                # (a small sum: the two arrays of the directions' whole input gradients)
                dY = self._workspaces[layer * D].take("layer_dY", parts[0].shape, self.dtype)
                np.add(*parts, out=dY)
                if mask is not None:
                    dY *= mask
                spent.append(functools.partial(self._workspaces[layer * D].give, layer_dY=dY))
            elif parts:
                # A bidirectional layer's input gradient is the sum of its directions', and each
                # direction below reads its own columns of it: each sums (and masks) just those,
                # on its own thread, into an array of its own (it would otherwise copy its
                # strided columns there after this thread had summed the whole: at (128, 200,
                # 256, 512) 11 ms on one thread, then 9.5 ms a direction)
                dY = _DirectionsSum(tuple(parts), mask, P, T, N, self.dtype)
            else:
                dY = dX * mask if mask is not None else dX

        dx, dh0, dc0 = (_to_caller(a, inverse, batched) for a in (dY, dh0, dc0))
        if dx is not None and batched and self.batch_first:
            dx = dx.transpose(1, 0, 2)
        # Free the saved sequences (gates, states: the bulk of training memory) now rather than
        # at the next forward, which would otherwise hold two sets at its peak.
        if not retain_graph:
            self._release_cache()
        if self.eq.has_cell:
            return dx, (dh0, dc0)
        return dx, dh0

    def _state_gradients(self):
        """Ask the backward of the last forward to keep ``dL/dh_t`` at every step (for
        :func:`elman.gradient_flow`; the forward must have run on the NumPy steps). Returns a
        function that, once that backward ran, gives one (T, N, P) array per layer-direction
        (index ``layer * D + direction``), time-major, in the caller's batch order, zero past a
        sequence's end."""
        st = self._cache
        for cache in st["caches"]:
            cache.dh_steps = np.zeros((st["T"], st["N"], self._P), self.dtype)

        def collect():
            return [_to_caller(cache.dh_steps, st["inverse"], True) for cache in st["caches"]]
        return collect


def stack_arguments(layer, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                    bidirectional, dtype, seed) -> None:
    """Check and set what every stack of recurrent layers takes (errors name the argument);
    ``layer._rng`` draws the initial weights, then the dropout masks."""
    layer.input_size = _validate.positive_int("input_size", input_size)
    layer.hidden_size = _validate.positive_int("hidden_size", hidden_size)
    layer.num_layers = _validate.positive_int("num_layers", num_layers)
    layer.bias = _validate.flag("bias", bias)
    layer.batch_first = _validate.flag("batch_first", batch_first)
    layer.dropout = _validate.probability("dropout", dropout)
    layer.bidirectional = _validate.flag("bidirectional", bidirectional)
    layer.dtype = _validate.float_dtype(dtype)
    layer._rng = _validate.rng(seed)


def layer_repr(layer, options=()) -> str:
    """``"input_size, hidden_size"``, then the stack options and ``options`` ((name, default)
    pairs) that differ from their defaults, and the dtype unless float32."""
    s = f"{layer.input_size}, {layer.hidden_size}"
    if layer.num_layers != 1:
        s += f", num_layers={layer.num_layers}"
    for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                          ("bidirectional", False)) + tuple(options):
        if getattr(layer, name, default) != default:   # (a subclass may lack an option)
            s += f", {name}={getattr(layer, name)!r}"
    if layer.dtype != np.float32:
        s += f", dtype={layer.dtype}"
    return s


def dropout_mask(rng: np.random.Generator, p: float, shape: tuple, dtype) -> np.ndarray:
    """Inverted dropout between layers: 0 with probability ``p``, else ``1 / (1 - p)`` (all 0
    for p = 1)."""
    keep = 1.0 - p
    mask = (rng.random(shape) < keep).astype(dtype)
    if keep > 0:
        mask /= keep
    return mask


def _to_caller(a, inverse, batched):
    """A (time or layer, N, ...) array back in the caller's batch order, unbatched if it was."""
    if a is None:
        return None
    if inverse is not None:
        a = a[:, inverse]
    return a if batched else a[:, 0]


def _state(name: str, value, shape: tuple, batched: bool, dtype) -> np.ndarray:
    """An initial state checked against ``shape`` (L*D, N, width), or (L*D, width) when the
    input is unbatched, and returned as ``shape``."""
    if batched:
        return check_state(name, value, shape, dtype)
    return check_state(name, value, (shape[0], shape[2]), dtype).reshape(shape)


class _DirectionsSum:
    """The gradient wrt a bidirectional layer's output, ``(forward + backward) * mask``
    (T, N, 2P), not yet summed: ``parts`` the input gradients of the two directions of the
    layer above (arrays, or :class:`elman.timeloop.InputGradient` products not yet taken),
    ``mask`` the dropout mask between the layers (or None). :func:`_backward_summed` sums
    one direction's columns of it."""

    def __init__(self, parts: tuple, mask: np.ndarray | None, P: int, T: int, N: int, dtype):
        self.parts, self.mask, self.P = parts, mask, P
        self.T, self.N, self.dtype = T, N, dtype

    def columns_into(self, direction: int, out: np.ndarray) -> np.ndarray:
        """Direction ``direction``'s columns (T, N, P) of the sum, into ``out``."""
        cols = slice(direction * self.P, (direction + 1) * self.P)
        forward, backward = self.parts
        if isinstance(forward, InputGradient):
            rows = out.reshape(-1, self.P)
            forward.columns_into(cols, rows, accumulate=False)
            backward.columns_into(cols, rows, accumulate=True)
        else:
            np.add(forward[:, :, cols], backward[:, :, cols], out=out)
        if self.mask is not None:
            out *= self.mask[:, :, cols]
        return out


#: the largest sum of an upper bidirectional layer's two input gradients (T N 2P elements)
#: that the caller adds up, so that the directions below run as one compiled call each
#: (:meth:`RecurrentLayer.backward`): two bidirectional layers trained 1.08x as fast at
#: (32, 50, 16, 64) (RNN, LSTM; 205 K elements), the RNN 0.94x at (32, 500, 32, 32) (1 M)
FUSED_SUM_MAX_ELEMENTS = 1 << 18


def _backward_summed(dY: _DirectionsSum, direction: int, workspace, eq, cache, *args,
                     **kwargs):
    """:func:`elman.timeloop.sequence_backward` (``eq, cache, dY_d, *args``) of one direction
    of a bidirectional layer below another, its ``dY_d`` (its columns of ``dY``) summed here
    first, on the direction's own thread, into an array of its workspace; ``args`` and
    ``kwargs`` are what follows ``dY_d``."""
    dY_d = dY.columns_into(direction, workspace.take("dY_sum", (dY.T, dY.N, dY.P), dY.dtype))
    try:
        return sequence_backward(eq, cache, dY_d, *args, **kwargs)
    finally:
        workspace.give(dY_sum=dY_d)


def _give_back(caches: list, inner: list) -> None:
    """The caches' internal arrays and the inner layers' outputs (``(workspace, array)``
    pairs) back to their workspaces: nothing may use them afterwards."""
    for cache in caches:
        release(cache)
    for workspace, array in inner:
        workspace.give(layer_out=array)


def _zero_padding(out: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Zero ``out[t, b]`` for ``t >= lengths[b]`` (pad_packed_sequence's padding value)."""
    T = out.shape[0]
    out[np.arange(T)[:, None] >= lengths[None, :]] = 0
    return out


@registry.register("module")
@registry.register("recurrent", "rnn")
class RNN(RecurrentLayer):
    r"""Elman RNN layer, ``torch.nn.RNN``'s twin.

    Each layer computes ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or relu).
    Parameters ``weight_ih_l{k}`` (H, I) for k = 0, (H, D*H) above; ``weight_hh_l{k}`` (H, H);
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H,); suffix ``_reverse`` for the backward direction.

    >>> import numpy as np, elman
    >>> rnn = elman.RNN(10, 20, num_layers=2, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((5, 3, 10))   # (T, N, I)
    >>> h0 = np.zeros((2, 3, 20))                                   # (num_layers, N, H)
    >>> out, h_n = rnn(x, h0)
    >>> out.shape, h_n.shape
    ((5, 3, 20), (2, 3, 20))
    >>> dx, dh0 = rnn.backward(np.ones_like(out), None)
    >>> dx.shape
    (5, 3, 10)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None, recurrent_dropout=0.0, input_dropout=0.0, layer_norm=False,
                 zoneout=0.0, stateful=False):
        eq = (LayerNormRNNEquations if _validate.flag("layer_norm", layer_norm)
              else RNNEquations)(nonlinearity)
        super().__init__(eq, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed, recurrent_dropout, input_dropout, zoneout,
                         stateful)
        self.nonlinearity = nonlinearity
        self.layer_norm = layer_norm

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else s + f", nonlinearity={self.nonlinearity!r}"

    def config(self):
        return dict(super().config(), nonlinearity=self.nonlinearity)


@registry.register("module")
@registry.register("recurrent", "gru")
class GRU(RecurrentLayer):
    r"""Gated recurrent unit layer, ``torch.nn.GRU``'s twin (equations in
    :mod:`elman.cells.gru`; gate rows ``[r | z | n]``, reset applied after ``W_hn h + b_hn``).

    ``reset_after=False`` gives the classic variant, ``n = tanh(W_in x + b_in + W_hn (r * h) +
    b_hn)`` (Cho et al. 2014; Keras' ``reset_after=False``), which PyTorch lacks; the parameters
    keep the same names and shapes.

    >>> import numpy as np, elman
    >>> gru = elman.GRU(4, 8, bidirectional=True, batch_first=True, seed=0)
    >>> out, h_n = gru(np.zeros((2, 6, 4)))            # (N, T, I)
    >>> out.shape, h_n.shape                            # (N, T, 2*H), (2, N, H)
    ((2, 6, 16), (2, 2, 8))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 reset_after=True, recurrent_dropout=0.0, input_dropout=0.0, layer_norm=False,
                 zoneout=0.0, stateful=False):
        eq = (LayerNormGRUEquations if _validate.flag("layer_norm", layer_norm)
              else GRUEquations)(reset_after)
        super().__init__(eq, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed, recurrent_dropout, input_dropout, zoneout,
                         stateful)
        self.reset_after = _validate.flag("reset_after", reset_after)
        self.layer_norm = layer_norm

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.reset_after else s + ", reset_after=False"

    def config(self):
        cfg = super().config()
        if not self.reset_after:
            cfg["reset_after"] = False
        return cfg


@registry.register("module")
@registry.register("recurrent", "lstm")
class LSTM(RecurrentLayer):
    r"""Long short-term memory layer, ``torch.nn.LSTM``'s twin (equations in
    :mod:`elman.cells.lstm`; gate rows ``[i | f | g | o]``). With ``proj_size = P > 0`` the hidden
    state is projected, ``h_t = W_hr (o_t * tanh(c_t))``, and ``weight_hr_l{k}`` (P, H) appears.
    ``forget_bias=b`` starts every forget gate's bias at ``b`` (``bias_ih`` forget block ``b``,
    ``bias_hh``'s 0; Jozefowicz et al. 2015, Keras' ``unit_forget_bias`` for b = 1); the default
    None keeps PyTorch's initialisation.

    >>> import numpy as np, elman
    >>> lstm = elman.LSTM(3, 6, proj_size=2, seed=0)
    >>> out, (h_n, c_n) = lstm(np.zeros((5, 4, 3)), lengths=[5, 2, 3, 1])
    >>> out.shape, h_n.shape, c_n.shape
    ((5, 4, 2), (1, 4, 2), (1, 4, 6))

    ``peephole=True`` adds peephole connections (Gers & Schmidhuber 2000; the ONNX ``LSTM``
    operator's ``P``; equations in :mod:`elman.cells.peephole_lstm`): ``i`` and ``f`` see
    ``c_{t-1}``, ``o`` sees ``c_t``, through the diagonal weights ``weight_ci_l{k}``,
    ``weight_cf_l{k}``, ``weight_co_l{k}`` (H,), initialised to zero. torch.nn.LSTM has none.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32, seed=None,
                 forget_bias=None, recurrent_dropout=0.0, input_dropout=0.0, layer_norm=False,
                 peephole=False, zoneout=0.0, stateful=False):
        layer_norm = _validate.flag("layer_norm", layer_norm)
        peephole = _validate.flag("peephole", peephole)
        if layer_norm and peephole:
            raise ValueError("layer_norm=True and peephole=True cannot be combined (yet): choose "
                             "one")
        cls = (LayerNormLSTMEquations if layer_norm else PeepholeLSTMEquations if peephole
               else LSTMEquations)
        eq = cls(forget_bias)
        if eq.forget_bias is not None and not _validate.flag("bias", bias):
            raise ValueError("forget_bias needs bias=True (it sets the forget gate's bias)")
        super().__init__(eq, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, dtype, seed, recurrent_dropout,
                         input_dropout, zoneout, stateful)
        self.forget_bias = eq.forget_bias
        self.layer_norm = layer_norm
        self.peephole = peephole

    def extra_repr(self):
        s = super().extra_repr()
        if self.peephole:
            s += ", peephole=True"
        return s if self.forget_bias is None else s + f", forget_bias={self.forget_bias}"

    def config(self):
        cfg = dict(super().config(), proj_size=self.proj_size)
        if self.forget_bias is not None:
            cfg["forget_bias"] = self.forget_bias
        if self.peephole:                 # only when on: older configs and checkpoints stay
            cfg["peephole"] = True
        return cfg
