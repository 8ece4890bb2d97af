r"""The gradient-flow inspector: how large the gradient of the loss is with respect to each
recurrent layer's hidden state, step by step, i.e. what backpropagation through time carries
back to step ``t``. Vanishing gradients show as a curve that falls by orders of magnitude from
the last step towards the first; exploding ones as a curve that rises.

For a layer with states ``h_1 .. h_T`` and a loss ``L``, the quantity is the total derivative

.. math::  g_t = \frac{dL}{dh_t} = \frac{\partial L}{\partial y_t}
           + \left(\frac{\partial h_{t+1}}{\partial h_t}\right)^\top g_{t+1}

(every path: through the layer's output at ``t``, and through all later steps; for an LSTM the
hidden state ``h_t``, not the cell state; with ``proj_size`` the projected ``h_t``). It is
exactly the ``dh`` that the layers' own backward passes carry from step to step (the NumPy steps
of :mod:`elman.timeloop`, the reverse scan of :mod:`elman.scan`), recorded as they go; nothing
is re-derived. The result per step is ``||g_t||_2`` over the hidden units, averaged over the
batch.

>>> import numpy as np, elman
>>> model = elman.Sequential([elman.LSTM(2, 8, batch_first=True, seed=0),
...                           elman.Last(batch_first=True), elman.Dense(8, 1, seed=1)])
>>> x = np.random.default_rng(0).standard_normal((4, 30, 2)).astype(np.float32)   # (N, T, F)
>>> flows = elman.gradient_flow(model, x)
>>> list(flows), flows["0:LSTM"].shape
(['0:LSTM'], (30,))
>>> bool(flows["0:LSTM"][0] < flows["0:LSTM"][-1])      # smaller far from the loss
True
"""
from __future__ import annotations

import numpy as np

from . import fast, losses as _losses
from .minimal import MinimalLayer
from .model import Sequential
from .module import Module
from .recurrent import RecurrentLayer

__all__ = ["gradient_flow"]

_LAYERS = (RecurrentLayer, MinimalLayer)


def gradient_flow(model, x, y=None, loss=None, lengths=None) -> dict[str, np.ndarray]:
    """``||dL/dh_t||_2`` averaged over the batch, per step, for every recurrent layer of
    ``model``.

    ``model``: a recurrent layer (``RNN``, ``GRU``, ``LSTM`` with any options, ``MinGRU``,
    ``MinLSTM``) or a :class:`elman.Sequential` holding some (nested ones too). ``x``: a batch
    as the model takes it (a layer: its own layout, e.g. (T, N, I); a ``Sequential``: samples
    first). ``lengths``: one int per sequence, as the model's forward takes it.

    The loss: with ``y``, ``loss(prediction, y)`` where ``loss`` is a :class:`elman.Loss` (or
    its name, e.g. ``"mse"``) or a callable returning ``(value, gradient)``; without ``loss``,
    the loss the ``Sequential`` was compiled with. Without ``y`` and ``loss``: the sum of the
    model's outputs at the last step (a layer, or a ``Sequential`` whose output keeps the time
    axis: each sequence's last valid step; a ``Sequential`` ending in a picker or a head without
    time axis: its whole output).

    Returns ``{name: array}`` in the models' layer order, float64: shape (T,) per layer, or
    (2, T) for a bidirectional one (row 0 the forward direction, row 1 the reverse one, both
    indexed by time step ``t``). Names: a layer alone is its class name (``"LSTM"``); inside a
    ``Sequential`` the layer's position and class, ``"1:GRU"`` (``"2.0:GRU"`` in a nested one).
    A stack with ``num_layers > 1`` gives one entry per stacked layer, ``"1:GRU/l0"``,
    ``"1:GRU/l1"``, ... With ``lengths``, a sequence contributes 0 at the steps past its end
    (its state there is not part of the computation), and the average stays over the whole
    batch.

    The gradients are those the model's own arithmetic produces, in its dtype: in float32 a
    gradient that has shrunk below ~1e-45 is 0 (and drawn as a gap on a log scale).

    The model is left as it was: the forward and backward run in evaluation mode (dropout off:
    the gradient of the function the model computes at inference), on the NumPy steps (they
    record ``dL/dh_t``; the compiled loops do not), and afterwards every parameter's ``.grad``,
    every module's training mode, random generators and saved forward state are restored
    (optimizer state is never touched: nothing steps).
    """
    if not isinstance(model, Module):
        raise TypeError(f"gradient_flow: model must be an elman recurrent layer or Sequential, "
                        f"got {type(model).__name__}")
    layers = [(path, m) for path, m in model.named_modules() if isinstance(m, _LAYERS)]
    if not layers:
        raise ValueError(f"gradient_flow: {type(model).__name__} has no recurrent layer "
                         f"(RNN, GRU, LSTM, MinGRU, MinLSTM)")
    if not isinstance(model, (Sequential,) + _LAYERS):
        raise TypeError(f"gradient_flow: model must be a recurrent layer or a Sequential, got "
                        f"{type(model).__name__}")
    if y is None and loss is not None:
        raise ValueError("gradient_flow: a loss needs targets y; give y too, or neither "
                         "(then the loss is the sum of the outputs at the last step)")
    loss_fn = None
    if y is not None:
        loss_fn = _loss_of(model, loss)
    saved = _snapshot(model)
    try:
        model.eval()
        with fast.use(False):
            collectors = _forward_backward(model, layers, x, y, loss_fn, lengths)
    finally:
        _restore(model, saved)
    flows = {}
    for (path, layer), collect in zip(layers, collectors):
        label = f"{path}:{type(layer).__name__}" if path else type(layer).__name__
        D = 2 if layer.bidirectional else 1
        steps = collect()
        for k in range(layer.num_layers):
            # (T, N, P) -> ||.||_2 over the units, mean over the batch -> (T,) per direction
            rows = [np.linalg.norm(steps[k * D + d].astype(np.float64), axis=2).mean(axis=1)
                    for d in range(D)]
            name = label if layer.num_layers == 1 else f"{label}/l{k}"
            flows[name] = rows[0] if D == 1 else np.stack(rows)
    return flows


def _loss_of(model, loss):
    """The loss as a function ``(prediction, y) -> (value, gradient)``."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("gradient_flow: y was given but no loss: pass loss= (an elman.Loss, "
                             "its name such as 'mse', or a function returning (value, gradient))"
                             " or compile the model")
    if isinstance(loss, str):
        loss = _losses.get_loss(loss)
    if not callable(loss):
        raise TypeError(f"gradient_flow: loss must be an elman.Loss, a loss name or a callable, "
                        f"got {type(loss).__name__}")
    return loss


def _forward_backward(model, layers, x, y, loss_fn, lengths):
    """Forward, the loss's gradient wrt the prediction, backward; returns one collector per
    recurrent layer (see the layers' ``_state_gradients``)."""
    if isinstance(model, Sequential):
        pred = model.forward(x, lengths=lengths)
    else:
        pred, _ = model(x, lengths=lengths)
    # every recurrent layer has run its forward now: ask its backward to record
    collectors = [layer._state_gradients() for _, layer in layers]
    if loss_fn is not None:
        _, grad = loss_fn(pred, np.asarray(y))
        grad = np.asarray(grad, pred.dtype).reshape(pred.shape)
    else:
        grad = _last_step_ones(model, pred, lengths)
    if isinstance(model, Sequential):
        model.backward(grad)
    else:
        model.backward(grad, None, input_grad=False)
    return collectors


def _last_step_ones(model, pred, lengths):
    """d(sum of the outputs at the last step)/d(prediction): ones there, zeros elsewhere."""
    if isinstance(model, Sequential):
        if not model._output_is_sequence():
            return np.ones_like(pred)
        time_axis, batched = 1, True                # samples first
    else:
        batched = pred.ndim == 3
        time_axis = 1 if batched and model.batch_first else 0
    grad = np.zeros_like(pred)
    T = pred.shape[time_axis]
    last = np.full(pred.shape[1 - time_axis] if batched else 1, T - 1) if lengths is None \
        else np.asarray(lengths) - 1
    if not batched:
        grad[T - 1] = 1
    elif time_axis == 0:
        grad[last, np.arange(len(last))] = 1
    else:
        grad[np.arange(len(last)), last] = 1
    return grad


def _snapshot(model):
    """What running the model changes, to put back: each module's attributes (saved forward
    state, training mode), its parameters' gradients and its random generators' states."""
    modules = [m for _, m in model.named_modules()]
    attributes = [dict(vars(m)) for m in modules]
    grads = [(p, p.grad, p.grad.copy()) for p in model.parameters()]
    rngs = [(g, g.bit_generator.state) for m in modules for g in vars(m).values()
            if isinstance(g, np.random.Generator)]
    for m in modules:
        # the forward below must not release (and so spoil) a saved forward a caller may still
        # want to differentiate: it finds nothing saved, and the old state comes back after
        if getattr(m, "_cache", None) is not None:
            object.__setattr__(m, "_cache", None)
    return modules, attributes, grads, rngs


def _restore(model, saved) -> None:
    modules, attributes, grads, rngs = saved
    for m, attrs in zip(modules, attributes):
        vars(m).clear()
        vars(m).update(attrs)
    for p, grad, values in grads:        # the same arrays (an optimizer may hold them), as before
        grad[...] = values
        p.grad = grad
    for g, state in rngs:
        g.bit_generator.state = state
