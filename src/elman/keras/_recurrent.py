"""Keras' recurrent layers over elman's engine: ``SimpleRNN``, ``GRU``, ``LSTM`` and
``Bidirectional``.

Each layer keeps Keras' weights and layout::

    kernel            (input_dim, k*units)   k = 1 SimpleRNN, 3 GRU (z|r|h), 4 LSTM (i|f|c|o)
    recurrent_kernel  (units, k*units)
    bias              (k*units,)             one bias; a GRU with reset_after=True has two,
                                             (2, 3*units): [input bias; recurrent bias]

and runs :class:`elman.RNN`/:class:`elman.GRU`/:class:`elman.LSTM` (one layer, ``batch_first``)
on them: before a forward pass the weights are copied into the engine's PyTorch layout
(transposed, GRU gates reordered to r|z|n; LSTM's i|f|c|o is PyTorch's i|f|g|o), the single bias
going to ``bias_ih`` while ``bias_hh`` is held at zero -- exact, since the two enter every gate
as a sum; after a backward pass the engine's gradients are mapped back the same way and added
to the face's ``grad`` (the engine's ``bias_hh`` gradient is dropped, so it stays zero).

Shapes (samples first): x (N, T, input_dim) -> (N, units), or (N, T, units) with
``return_sequences``; ``return_state`` adds the final states (N, units) (``[output, h]``, LSTM
``[output, h, c]``). ``lengths`` (one int per sample; the model derives them from
``mask_zero``/``Masking``) skip each sequence's padding, as Keras' masks do.

``dropout`` and ``recurrent_dropout`` are Keras' variational dropout: one mask per sequence,
the same at every step, on the inputs and on ``h_{t-1}`` where it enters the recurrent kernel
(the engine's ``recurrent_dropout``). Keras draws one mask per gate; elman draws one per layer.

Not supported (refused with a ValueError naming the argument): ``recurrent_dropout`` with a
``GRU(reset_after=False)``, activations other than tanh (and relu for SimpleRNN),
``recurrent_activation`` other than sigmoid, ``go_backwards`` with ``return_sequences`` on
masked input (Keras' mask does not follow the reversal there).
"""
from __future__ import annotations

import numpy as np

from .. import _validate
from ..recurrent import GRU as _GRU
from ..recurrent import LSTM as _LSTM
from ..recurrent import RNN as _RNN
from ._base import Layer, draw_seed, from_spec, get_initializer, register

__all__ = ["SimpleRNN", "GRU", "LSTM", "Bidirectional"]


def reverse_valid(x: np.ndarray, lengths) -> np.ndarray:
    """Each row's first ``lengths[n]`` steps in reverse order, padding left in place (all T
    steps without lengths). Its own inverse, so it also maps gradients back."""
    if lengths is None:
        return x[:, ::-1]
    n, t = x.shape[:2]
    steps = np.arange(t)[None, :]
    ends = np.asarray(lengths)[:, None]
    idx = np.where(steps < ends, ends - 1 - steps, steps)
    return x[np.arange(n)[:, None], idx]


def lengths_from_mask(mask, x: np.ndarray):
    """Keras' (N, T) boolean mask -> lengths; only right padding (valid steps first)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must have shape {x.shape[:2]} (samples, time steps), got "
                         f"{mask.shape}")
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(x.shape[1])[None, :] < lengths[:, None]):
        raise ValueError("mask: a layer called directly takes right-padded masks only (each "
                         "row's valid steps first); pre-padded data works through "
                         "elman.keras.Sequential with mask_zero=True or Masking")
    return lengths


def _plus(a, b):
    return b if a is None else a if b is None else a + b


class _Recurrent(Layer):
    """What SimpleRNN, GRU and LSTM share; sub-classes name the engine and the gate layout."""

    _gates = 1
    _engine_cls = _RNN
    _n_states = 1

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, seed=None, name=None, dtype=None, input_shape=None,
                 recurrent_activation=None):
        super().__init__(name, dtype, input_shape)
        cls = type(self).__name__
        if self._gates > 1 and recurrent_activation != "sigmoid":   # GRU, LSTM
            raise ValueError(f"{cls}: recurrent_activation must be 'sigmoid' (what elman's "
                             f"engine computes), got {recurrent_activation!r}")
        self.units = _validate.positive_int("units", units)
        self.activation = activation
        allowed = ("tanh", "relu") if cls == "SimpleRNN" else ("tanh",)
        if activation not in allowed:
            raise ValueError(f"{cls}: activation must be one of {allowed} (what elman's engine "
                             f"computes), got {activation!r}")
        self.use_bias = _validate.flag("use_bias", use_bias)
        for what, init in (("kernel_initializer", kernel_initializer),
                           ("recurrent_initializer", recurrent_initializer),
                           ("bias_initializer", bias_initializer)):
            get_initializer(init, what)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.dropout = _validate.probability("dropout", dropout)
        self.recurrent_dropout = _validate.probability("recurrent_dropout", recurrent_dropout)
        self.return_sequences = _validate.flag("return_sequences", return_sequences)
        self.return_state = _validate.flag("return_state", return_state)
        self.go_backwards = _validate.flag("go_backwards", go_backwards)
        self.stateful = _validate.flag("stateful", stateful)
        self.unroll = _validate.flag("unroll", unroll)     # how Keras loops; same results
        self.seed = seed
        self._rng = _validate.rng(draw_seed() if seed is None else seed)   # dropout masks
        self._states = None                 # stateful: the last batch's final states
        self._cache = None

    @property
    def _sequence_effect(self):
        return "seq" if self.return_sequences else "pick"

    # -- weights ---------------------------------------------------------------------------
    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def _engine_kwargs(self) -> dict:
        return {}

    def build(self, input_shape) -> None:
        features = input_shape[-1]
        if len(input_shape) != 3 or features is None:
            raise ValueError(f"{self.name}: expected sequences (N, T, features) with a known "
                             f"number of features, got input shape {tuple(input_shape)}")
        width = self._gates * self.units
        self._add_weight("kernel", (features, width), self.kernel_initializer)
        self._add_weight("recurrent_kernel", (self.units, width), self.recurrent_initializer)
        if self.use_bias:
            self._add_weight("bias", self._bias_shape(), self._bias_initializer())
        # Keras' rule: a rate of 1 drops nothing (the mask applies only for 0 < rate < 1)
        rate = self.recurrent_dropout if self.recurrent_dropout < 1.0 else 0.0
        self.engine = self._engine_cls(features, self.units, bias=self.use_bias,
                                       batch_first=True, dtype=self.dtype, seed=0,
                                       recurrent_dropout=rate, **self._engine_kwargs())
        self.engine._rng = self._rng        # its masks come from this layer's seeded generator
        self._order = self._gate_order()
        self._inverse = np.argsort(self._order)
        self.built = True

    def _gate_order(self) -> np.ndarray:
        """Engine row r holds Keras column ``order[r]``."""
        return np.arange(self._gates * self.units)

    def _sync_in(self) -> None:
        """Copy the Keras-layout weights into the engine (PyTorch's layout)."""
        e, o = self.engine, self._order
        e.weight_ih_l0.data[...] = self.kernel.data.T[o]
        e.weight_hh_l0.data[...] = self.recurrent_kernel.data.T[o]
        if self.use_bias:
            b = self.bias.data
            e.bias_ih_l0.data[...] = (b[0] if b.ndim == 2 else b)[o]
            e.bias_hh_l0.data[...] = b[1][o] if b.ndim == 2 else 0

    def _grads_out(self) -> None:
        """Add the engine's gradients, in Keras' layout, to the face's."""
        e, inv = self.engine, self._inverse
        self.kernel.grad += e.weight_ih_l0.grad[inv].T
        self.recurrent_kernel.grad += e.weight_hh_l0.grad[inv].T
        if self.use_bias:
            if self.bias.data.ndim == 2:
                self.bias.grad[0] += e.bias_ih_l0.grad[inv]
                self.bias.grad[1] += e.bias_hh_l0.grad[inv]
            else:
                self.bias.grad += e.bias_ih_l0.grad[inv]

    # -- shapes ----------------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        out = tuple(input_shape[:2]) + (self.units,) if self.return_sequences \
            else (input_shape[0], self.units)
        return out

    # -- forward ---------------------------------------------------------------------------
    def _initial_states(self, initial_state, n: int):
        """The engine's ``hx`` from Keras' list of (N, units) states, or the stateful ones."""
        if initial_state is None and self.stateful and self._states is not None:
            if self._states[0].shape[0] != n:
                raise ValueError(f"{self.name} is stateful: its states hold a batch of "
                                 f"{self._states[0].shape[0]} but the input has {n} samples; "
                                 f"keep the batch size fixed (every batch, the last one too) "
                                 f"or call reset_states() after changing it")
            initial_state = self._states
        if initial_state is None:
            return None
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) \
            else [initial_state]
        if len(states) != self._n_states:
            raise ValueError(f"{self.name}: initial_state must be a list of {self._n_states} "
                             f"arrays (N, {self.units}), got {len(states)}")
        states = [np.asarray(s, dtype=self.dtype)[None] for s in states]
        return tuple(states) if self._n_states == 2 else states[0]

    def _run(self, x, lengths=None, initial_state=None):
        """The engine over x: (outputs (N, T, units) in processing order, [h, (c)]). The
        outputs are a view of the engine's buffers, reused by its next call: copy to keep."""
        x = _validate.float_array("input", x, self.dtype)
        if x.ndim != 3:
            raise ValueError(f"{self.name}: expected sequences (N, T, features), got input of "
                             f"shape {x.shape}")
        self._require_built(x)
        hx = self._initial_states(initial_state, x.shape[0])
        mask = None
        if self.training and 0.0 < self.dropout < 1.0:     # Keras' rule: one mask for all steps
            keep = self._rng.random((x.shape[0], 1, x.shape[2])) >= self.dropout
            mask = keep.astype(self.dtype) / self.dtype.type(1.0 - self.dropout)
            x = x * mask
        if self.go_backwards:
            x = reverse_valid(x, lengths)
        self._sync_in()
        self.engine.train(self.training)    # its recurrent dropout follows this layer's mode
        out, states = self.engine(x, hx, lengths=lengths)
        states = [s[0].copy() for s in (states if self._n_states == 2 else (states,))]
        if self.stateful:
            self._states = [s.copy() for s in states]
        self._save_for_backward((mask, lengths))
        return out, states

    def _backprop(self, dseq, dstates) -> np.ndarray:
        """Gradient wrt x from the gradients of the processing-order outputs and the final
        states (each may be None); adds the weight gradients."""
        self.engine.zero_grad()
        dstates = [None if d is None else np.asarray(d)[None] for d in dstates]
        dhx = tuple(dstates) if self._n_states == 2 else dstates[0]
        dx, _ = self.engine.backward(dseq, dhx)
        mask, lengths = self._cache
        if self.go_backwards:
            dx = reverse_valid(dx, lengths)
        if mask is not None:
            dx = dx * mask
        self._grads_out()
        return dx

    def forward(self, x, lengths=None, initial_state=None, mask=None):
        """Keras' output: (N, units) or (N, T, units); with ``return_state`` the list
        ``[output, *final_states]``. ``mask`` (N, T) is Keras' (right padding here)."""
        if mask is not None:
            if lengths is not None:
                raise ValueError("give mask or lengths, not both")
            lengths = lengths_from_mask(mask, np.asarray(x))
        if self.go_backwards and self.return_sequences and lengths is not None:
            raise ValueError(f"{self.name}: go_backwards=True with return_sequences=True on "
                             f"masked input is not supported (Keras' mask does not follow the "
                             f"reversed outputs); use Bidirectional, or return_sequences=False")
        out, states = self._run(x, lengths, initial_state)
        output = np.array(out) if self.return_sequences else states[0]
        return [output] + states if self.return_state else output

    def backward(self, grad_out):
        grads = list(grad_out) if self.return_state else [grad_out]
        dseq = grads[0] if self.return_sequences else None
        dstates = list(grads[1:]) if self.return_state else [None] * self._n_states
        if not self.return_sequences:
            dstates[0] = _plus(dstates[0], grads[0])
        return self._backprop(dseq, dstates)

    def reset_states(self) -> None:
        """Zero the states a stateful layer carries from batch to batch."""
        if self._states is not None:
            for s in self._states:
                s[...] = 0

    reset_state = reset_states

    def get_config(self) -> dict:
        return dict(super().get_config(), units=self.units, activation=self.activation,
                    use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                    recurrent_initializer=self.recurrent_initializer,
                    bias_initializer=self.bias_initializer, dropout=self.dropout,
                    recurrent_dropout=self.recurrent_dropout,
                    return_sequences=self.return_sequences, return_state=self.return_state,
                    go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
                    seed=self.seed)


@register
class SimpleRNN(_Recurrent):
    """Keras' ``SimpleRNN``: ``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel +
    bias)``, over :class:`elman.RNN`. ``activation``: "tanh" or "relu".

    >>> import numpy as np
    >>> layer = SimpleRNN(4, return_sequences=True)
    >>> layer(np.zeros((2, 5, 3), np.float32)).shape          # (N, T, units)
    (2, 5, 4)
    >>> [w.shape for w in layer.get_weights()]                 # kernel, recurrent_kernel, bias
    [(3, 4), (4, 4), (4,)]
    """

    def _engine_kwargs(self):
        return {"nonlinearity": self.activation}


@register
class GRU(_Recurrent):
    """Keras' ``GRU`` (gates z|r|h), over :class:`elman.GRU`. ``reset_after=True`` (Keras 3's
    default) applies the reset gate after the recurrent product and has two biases, (2, 3*units);
    ``reset_after=False`` the classic form, one bias (3*units,)."""

    _gates = 3
    _engine_cls = _GRU

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 reset_after=True, **kwargs):
        super().__init__(units, activation, use_bias, recurrent_activation=recurrent_activation,
                         **kwargs)
        self.reset_after = _validate.flag("reset_after", reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _engine_kwargs(self):
        return {"reset_after": self.reset_after}

    def _gate_order(self):
        u = self.units               # Keras' columns [z | r | h] -> the engine's rows [r | z | n]
        return np.concatenate([np.arange(u, 2 * u), np.arange(u), np.arange(2 * u, 3 * u)])

    def get_config(self):
        return dict(super().get_config(), reset_after=self.reset_after)


@register
class LSTM(_Recurrent):
    """Keras' ``LSTM`` (gates i|f|c|o, PyTorch's i|f|g|o), over :class:`elman.LSTM`.
    ``unit_forget_bias=True`` (Keras' default) starts the forget gate's bias at 1."""

    _gates = 4
    _engine_cls = _LSTM
    _n_states = 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 unit_forget_bias=True, **kwargs):
        super().__init__(units, activation, use_bias, recurrent_activation=recurrent_activation,
                         **kwargs)
        self.unit_forget_bias = _validate.flag("unit_forget_bias", unit_forget_bias)

    def _bias_initializer(self):
        base = get_initializer(self.bias_initializer, "bias_initializer")
        if not self.unit_forget_bias:
            return base

        def init(array, rng):                 # [i: init | f: ones | c, o: init]
            base(array, rng)
            array[self.units:2 * self.units] = 1
            return array
        return init

    def get_config(self):
        return dict(super().get_config(), unit_forget_bias=self.unit_forget_bias)


_MERGES = ("concat", "sum", "mul", "ave", None)


@register
class Bidirectional(Layer):
    """Keras' ``Bidirectional(layer, merge_mode)``: a copy of ``layer`` reads the sequence
    forwards, another (``go_backwards=True``) backwards, and their outputs are merged:
    ``"concat"`` (N, ..., 2*units), ``"sum"``, ``"mul"``, ``"ave"``, or None (the pair, for a
    layer called directly). With ``return_sequences`` the backward outputs are put back in time
    order (per sequence, up to its length). The weights are the forward layer's, then the
    backward layer's (Keras' order)."""

    def __init__(self, layer, merge_mode="concat", backward_layer=None, name=None,
                 input_shape=None):
        layer, backward_layer = from_spec(layer), from_spec(backward_layer)
        if not isinstance(layer, _Recurrent):
            raise TypeError(f"Bidirectional wraps an elman.keras SimpleRNN, GRU or LSTM, got "
                            f"{type(layer).__name__}")
        if merge_mode not in _MERGES:
            raise ValueError(f"merge_mode must be one of {_MERGES}, got {merge_mode!r}")
        if layer.go_backwards:
            raise ValueError("Bidirectional: the wrapped layer must have go_backwards=False "
                             "(the backward copy is made for you)")
        super().__init__(name, layer.dtype, input_shape)
        cfg = layer.get_config()
        base = layer.name.removeprefix("forward_")
        self.forward_layer = type(layer)(**dict(cfg, name="forward_" + base))
        if backward_layer is None:
            backward_layer = type(layer)(**dict(cfg, name="backward_" + base,
                                                go_backwards=True))
        elif not isinstance(backward_layer, _Recurrent) or not backward_layer.go_backwards \
                or backward_layer.return_sequences != layer.return_sequences \
                or backward_layer.return_state != layer.return_state:
            raise ValueError("Bidirectional: backward_layer must be an elman.keras recurrent "
                             "layer with go_backwards=True and the same return_sequences and "
                             "return_state as the forward layer")
        self.backward_layer = backward_layer
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self._cache = None

    @property
    def _sequence_effect(self):
        return "seq" if self.return_sequences else "pick"

    def build(self, input_shape) -> None:
        for part in (self.forward_layer, self.backward_layer):
            if not part.built:
                part.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        a = self.forward_layer.compute_output_shape(input_shape)
        b = self.backward_layer.compute_output_shape(input_shape)
        return a[:-1] + (a[-1] + b[-1],) if self.merge_mode == "concat" else a

    def forward(self, x, lengths=None, initial_state=None, mask=None):
        if mask is not None:
            if lengths is not None:
                raise ValueError("give mask or lengths, not both")
            lengths = lengths_from_mask(mask, np.asarray(x))
        self._require_built(x)
        fwd, bwd = self.forward_layer, self.backward_layer
        f_state = b_state = None
        if initial_state is not None:
            half = len(initial_state) // 2
            f_state, b_state = initial_state[:half], initial_state[half:]
        f_out, f_states = fwd._run(x, lengths, f_state)
        b_out, b_states = bwd._run(x, lengths, b_state)
        if self.return_sequences:
            a, b = f_out, reverse_valid(b_out, lengths)     # back in time order
        else:
            a, b = f_states[0], b_states[0]
        self._save_for_backward((a, b, lengths))
        merged = _merge(self.merge_mode, a, b)
        if not self.return_state:
            return merged
        return (list(merged) if self.merge_mode is None else [merged]) + f_states + b_states

    def backward(self, grad_out):
        a, b, lengths = self._cache
        grads = list(grad_out) if self.return_state or self.merge_mode is None else [grad_out]
        k = 2 if self.merge_mode is None else 1
        ga, gb = _merge_backward(self.merge_mode, a, b, grads[:k])
        n = self.forward_layer._n_states
        f_d = list(grads[k:k + n]) if self.return_state else [None] * n
        b_d = list(grads[k + n:]) if self.return_state else [None] * n
        if self.return_sequences:
            gb = None if gb is None else reverse_valid(np.asarray(gb), lengths)
            dx = self.forward_layer._backprop(ga, f_d)
            dx = dx + self.backward_layer._backprop(gb, b_d)
        else:
            f_d[0], b_d[0] = _plus(f_d[0], ga), _plus(b_d[0], gb)
            dx = self.forward_layer._backprop(None, f_d) + self.backward_layer._backprop(None, b_d)
        return dx

    def reset_states(self) -> None:
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    def get_config(self) -> dict:
        return {"layer": self.forward_layer.spec(), "merge_mode": self.merge_mode,
                "backward_layer": self.backward_layer.spec(), "name": self.name}

    reset_state = reset_states


def _merge(mode, a, b):
    if mode == "concat":
        return np.concatenate([a, b], axis=-1)
    if mode == "sum":
        return a + b
    if mode == "mul":
        return a * b
    if mode == "ave":
        return (a + b) / a.dtype.type(2)
    return (a.copy(), b.copy())          # the forward outputs may be the engine's buffers


def _merge_backward(mode, a, b, grads):
    """(d a, d b) from the gradient(s) of the merged output."""
    if mode is None:
        return grads[0], grads[1]
    g = np.asarray(grads[0])
    if mode == "concat":
        u = a.shape[-1]
        return g[..., :u], g[..., u:]
    if mode == "sum":
        return g, g
    if mode == "mul":
        return g * b, g * a
    half = g / g.dtype.type(2)
    return half, half
