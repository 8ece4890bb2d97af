"""Stateful recurrent layers (Keras' ``stateful=True``): the final states of one call are the
initial states of the next, row by row.

A layer built with ``stateful=True`` (:class:`elman.RNN`, :class:`elman.GRU`,
:class:`elman.LSTM`, :class:`elman.MinGRU`, :class:`elman.MinLSTM`) keeps, after every forward
call, a copy of its final states ``h_n`` (and ``c_n``), and a later call given no ``hx`` starts
from them. Row ``n`` of one batch therefore continues row ``n`` of the batch before: cut a long
text or series into ``N`` contiguous streams, feed windows of ``K`` steps of every stream in
order (:func:`elman.data.stream_windows` does the cutting), and the layer reads each stream as
one sequence while backpropagation stops at the window boundary. That is truncated BPTT, what a
PyTorch user writes by hand as ``out, h = lstm(x, h); h = h.detach()``: ``backward`` only ever
differentiates the last call, so no gradient reaches the previous window.

Rules, as in Keras:

* an ``hx`` given explicitly wins over the carried states (which the call then replaces);
* with ``lengths``, the carried state of a row is its state at its last valid step (the
  ``h_n`` of a packed sequence);
* the carried states fix the batch size: a call with another number of rows is an error
  until :meth:`StatefulMixin.reset_states` (or ``Sequential.reset_states()``) drops them;
* the states are carried in training and evaluation mode alike.

Unlike Keras, ``reset_states()`` forgets the batch size too (the next call starts from zeros
with any number of rows), so a model can validate with another batch size after a reset.
The carried states are not saved by :func:`elman.save` (the ``stateful`` option is): a loaded
model starts from zeros, as a freshly built one does.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import _validate

__all__ = ["StatefulMixin", "reset_states", "is_stateful", "states_kept"]


class StatefulMixin:
    """What a recurrent layer needs to carry its states between calls. The layer calls
    :meth:`_stateful_init` in its constructor, :meth:`_carry_in` on ``hx`` before a forward and
    :meth:`_carry_out` on its final states after it."""

    stateful = False
    _carried = None

    def _stateful_init(self, stateful) -> None:
        self.stateful = _validate.flag("stateful", stateful)
        self._carried = None               # (rows or None if unbatched, (h_n, c_n or None))

    def _carry_in(self, hx, rows: int, batched: bool):
        """``hx`` for this call: the caller's, else the carried states (checked against the
        batch), else None (zeros)."""
        if not self.stateful or hx is not None or self._carried is None:
            return hx
        carried_rows, (h, c) = self._carried
        if carried_rows != (rows if batched else None):
            had = "unbatched input" if carried_rows is None else f"a batch of {carried_rows}"
            got = f"a batch of {rows}" if batched else "unbatched input"
            raise ValueError(
                f"{type(self).__name__} is stateful and carries the states of {had}, but "
                f"this input has {got}; keep the batch size fixed from call to call (the "
                f"last batch too), or call reset_states() before changing it")
        return h if c is None else (h, c)

    def _carry_out(self, h_n, c_n, rows: int, batched: bool) -> None:
        """Keep copies of this call's final states (the layer reuses its buffers)."""
        if self.stateful:
            self._carried = (rows if batched else None,
                             (np.array(h_n), None if c_n is None else np.array(c_n)))

    def reset_states(self) -> None:
        """Forget the carried states: the next call starts from zeros, with any batch size."""
        self._carried = None

    @property
    def states(self):
        """The carried states (``h_n``, or ``(h_n, c_n)`` for an LSTM), or None."""
        if self._carried is None:
            return None
        h, c = self._carried[1]
        return h if c is None else (h, c)


def reset_states(module) -> None:
    """Call ``reset_states()`` on ``module`` and every sub-module that has it."""
    for _, m in module.named_modules():          # (module itself first)
        if isinstance(m, StatefulMixin):
            m.reset_states()


def is_stateful(module) -> bool:
    """Whether ``module`` or one of its sub-modules carries states between calls."""
    return any(isinstance(m, StatefulMixin) and m.stateful for _, m in module.named_modules())


@contextlib.contextmanager
def states_kept(module):
    """A block whose calls neither read nor change the carried states of ``module``'s layers
    (e.g. a probe with a dummy batch, such as ``Sequential.summary``)."""
    layers = [m for _, m in module.named_modules() if isinstance(m, StatefulMixin)]
    kept = [m._carried for m in layers]
    for m in layers:
        m._carried = None
    try:
        yield
    finally:
        for m, carried in zip(layers, kept):
            m._carried = carried
