"""Contiguous streams for stateful training with truncated backpropagation through time.

A long text or series is cut into ``streams`` equal consecutive pieces, and each piece into
windows of ``window`` steps. Batch ``j`` holds window ``j`` of every piece, so row ``n`` of batch
``j + 1`` continues row ``n`` of batch ``j``: a stateful recurrent layer (``stateful=True``, see
:mod:`elman.stateful`) carries each stream's state from batch to batch, and backpropagation
stops at the window boundary. Samples first, as :meth:`elman.Sequential.fit` takes them::

    x, y, lengths = stream_windows(ids, streams=32, window=64)
    model.fit(x, y, batch_size=32, shuffle=False, lengths=lengths)

The same layout as the ``batchify`` of PyTorch's word-language-model example and Keras'
stateful-RNN recipes, with the windows stacked along the samples axis.
"""
from __future__ import annotations

import numpy as np

from .. import _validate

__all__ = ["stream_windows"]


def stream_windows(sequence, streams: int, window: int, targets=None, offset: int = 0):
    """Inputs and next-step targets of ``streams`` contiguous streams, in windows.

    ``sequence`` is (R,) token ids or (R, F) rows of a series; ``targets`` (R, ...) defaults to
    ``sequence``: the target of step ``t`` is ``targets[t + 1]``. From ``offset`` on, the ``R -
    offset - 1`` steps that have a next step are cut into ``streams`` pieces of ``L = (R -
    offset - 1) // streams`` steps (the remainder at the end is dropped), each piece into
    ``ceil(L / window)`` windows.

    Returns ``(x, y, lengths)``: ``x`` (W * streams, window, ...) where sample ``j * streams +
    n`` is window ``j`` of stream ``n``; ``y`` likewise; ``lengths`` (W * streams,) the valid
    steps of each window when the last windows are shorter than ``window`` (padded with zeros
    after their end), else None. Feed them to ``fit(x, y, batch_size=streams, shuffle=False,
    lengths=lengths)``.

    >>> x, y, lengths = stream_windows(np.arange(9), streams=2, window=3)
    >>> x.tolist()                      # window 0 of streams 0 and 1, then window 1
    [[0, 1, 2], [4, 5, 6], [3, 0, 0], [7, 0, 0]]
    >>> y.tolist(), lengths.tolist()
    ([[1, 2, 3], [5, 6, 7], [4, 0, 0], [8, 0, 0]], [3, 3, 1, 1])
    """
    seq = np.asarray(sequence)
    if seq.ndim == 0:
        raise ValueError("stream_windows: sequence must have a time axis, got a scalar")
    tgt = seq if targets is None else np.asarray(targets)
    if len(tgt) != len(seq):
        raise ValueError(f"stream_windows: targets must have one row per step of sequence "
                         f"({len(seq)}), got {len(tgt)}")
    streams = _validate.positive_int("streams", streams)
    window = _validate.positive_int("window", window)
    offset = _validate.positive_int("offset", offset, minimum=0)
    length = (len(seq) - offset - 1) // streams          # every input needs a next step
    if length < 1:
        raise ValueError(f"stream_windows: {streams} streams need at least {streams + 1 + offset} "
                         f"steps (offset {offset}), got {len(seq)}; use fewer streams or a "
                         f"longer sequence")
    used = streams * length
    x = seq[offset:offset + used].reshape((streams, length) + seq.shape[1:])
    y = tgt[offset + 1:offset + 1 + used].reshape((streams, length) + tgt.shape[1:])
    count = -(-length // window)                           # windows per stream
    pad = count * window - length

    def stack(a):                   # (streams, length, ...) -> (count * streams, window, ...)
        if pad:
            a = np.concatenate([a, np.zeros((streams, pad) + a.shape[2:], a.dtype)], axis=1)
        a = a.reshape((streams, count, window) + a.shape[2:])
        return np.ascontiguousarray(a.swapaxes(0, 1).reshape((count * streams, window)
                                                             + a.shape[3:]))
    lengths = None
    if pad:
        lengths = np.full(count * streams, window, dtype=np.intp)
        lengths[-streams:] = window - pad
    return stack(x), stack(y), lengths
