"""Keras-style models: :class:`Sequential` with ``compile``, ``fit``, ``evaluate``, ``predict``
and ``summary`` (the metrics it accepts live in :mod:`elman.metrics`).

The training loop in :meth:`Sequential.fit` runs, for every batch, in labelled phases:
zero the gradients, forward, loss, backward, clip, optimizer step, log. All of its randomness
(the shuffling order) comes from the model's own generator ``model._rng`` and the layers'
generators (dropout masks), never from NumPy's global state, so a checkpoint that stores those
generators (:func:`elman.save`) resumes a run bit for bit.
"""
from __future__ import annotations

import copy
import inspect
import math
import numbers
import shutil
import sys
import time

import numpy as np

from . import _validate, registry
from . import distributed as _distributed
from . import threads as _threads
from . import losses as _losses
from . import optim as _optim
from .callbacks import Callback, CallbackList, History
from .grad_mode import no_grad
# re-exported so `from elman.model import METRICS, get_metric` keeps working
from .metrics import METRICS, Metric, _expand, _like, get_metric  # noqa: F401
from .layers import Embedding, Linear, _SequencePicker
from .module import Module
from .minimal import MinimalLayer
from .recurrent import RecurrentLayer
from .stateful import is_stateful, reset_states, states_kept

__all__ = ["Sequential"]


# -- data checks --------------------------------------------------------------------------------

def _as_data(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a samples axis (axis 0), got a scalar")
    if len(arr) == 0:
        raise ValueError(f"{name} has no samples (shape {arr.shape})")
    return arr


def _check_finite(name: str, arr: np.ndarray, valid=None) -> None:
    """Refuse NaN/inf, naming the first bad sample; ``valid`` (N, T) exempts padding steps."""
    if arr.dtype.kind != "f":
        return
    ok = np.isfinite(arr)
    if valid is not None:
        ok = ok.reshape(valid.shape + (-1,)).all(axis=2) | ~valid
    bad = ~ok.reshape(len(arr), -1).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} contains NaN or infinite values: the first bad sample is "
                         f"index {i} (of {len(arr)}); clean or drop it before training")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _nonneg_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _lengths_from_mask(x: np.ndarray, mask_value, what: str):
    """Padding steps -> (x with valid steps moved to the front, lengths, order or None).

    A step is padding when it equals ``mask_value`` ((N, T) token ids) or when all its
    features do ((N, T, F)); NaN matches NaN. Valid steps keep their order and are moved to the
    front of each row (``order[n]`` lists the original step of each new position), which turns
    pre-padding (and any other placement) into the right-padding that ``lengths`` describe.
    """
    if x.ndim not in (2, 3):
        raise ValueError(f"{what}: mask_value needs (N, T) token ids or (N, T, F) sequences, "
                         f"got shape {x.shape}")
    is_nan = isinstance(mask_value, numbers.Real) and math.isnan(mask_value)
    pad = np.isnan(x) if is_nan and x.dtype.kind == "f" else (x == mask_value)
    if x.ndim == 3:
        pad = pad.all(axis=2)
    valid = ~pad
    lengths = valid.sum(axis=1)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(f"{what}: sample {int(empty[0])} is all padding (every step equals "
                         f"mask_value={mask_value!r}); drop it")
    T = x.shape[1]
    order = None
    if not np.array_equal(valid, np.arange(T)[None, :] < lengths[:, None]):
        order = np.argsort(pad, axis=1, kind="stable")       # valid steps first, in order
        x = x[np.arange(len(x))[:, None], order]
    if x.dtype.kind == "f" and not np.isfinite(mask_value):
        # NaN/inf padding must not reach a layer before the recurrent one (0 * inf = NaN)
        keep = (np.arange(T)[None, :] < lengths[:, None])
        x = np.where(_expand(keep, x.ndim), x, 0).astype(x.dtype)
    return x, lengths.astype(np.intp), order


def _reorder(a: np.ndarray, order) -> np.ndarray:
    return a[np.arange(len(a))[:, None], order]


def _restore_order(a: np.ndarray, order) -> np.ndarray:
    """Inverse of :func:`_reorder`: step ``k`` of row ``n`` goes back to ``order[n, k]``."""
    out = np.empty_like(a)
    out[np.arange(len(a))[:, None], order] = a
    return out


# -- Sequential ---------------------------------------------------------------------------------

@registry.register("module")
class Sequential(Module):
    """A stack of layers trained Keras-style: ``compile``, ``fit``, ``evaluate``, ``predict``.

    Layers are registered as sub-modules ``"0"``, ``"1"``, ... so parameters are named like
    ``torch.nn.Sequential``'s (``"0.weight"``, ``"1.weight_ih_l0"``). Forward chains them: a
    recurrent layer (``RNN``/``GRU``/``LSTM``) passes on its output sequence (its final states
    are dropped); the sequence pickers (``Last``, ``LastBidirectional``, ``MeanPool``) and the
    recurrent layers receive the batch's ``lengths``; every other layer gets just the array.

    **Data layout: samples first, always.** ``model(x)``, ``fit``, ``evaluate`` and ``predict``
    take batch-major data, as Keras does: ``x`` is (N, T, F) sequences, (N, T) token ids for an
    ``Embedding``, or (N, F) for a model without sequence layers; ``y`` and the predictions have
    the samples on axis 0 as well ((N, T, ...) for per-step outputs). The recurrent layers and
    pickers may be built either way: ``Sequential`` hands each of them the layout its
    ``batch_first`` asks for (PyTorch's time-major default or ``batch_first=True``), swapping
    the two leading axes only where the layout changes, and swaps per-step outputs back to
    samples-first at the end. The layers in between (``Dense``, ``Dropout``, ``LayerNorm``,
    activations) work on either layout. So ``Sequential([Embedding(...), RNN(...), Last(),
    Dense(...)])`` with default arguments just works.

    **Variable lengths.** ``lengths=`` (one int per sample, for right-padded data) or
    ``mask_value=`` (the padding value: a step is padding when it equals it, or when all its
    features do) are routed to the recurrent layers and pickers. With ``mask_value`` the valid
    steps of each sample are moved to the front, so pre-padded data (Keras' ``pad_sequences``
    default) works too and behaves as Keras' masking does (padding is skipped); per-step
    targets are moved the same way and per-step predictions moved back. For per-step outputs
    the loss and metrics ignore padded steps; the predictions there are not meaningful.

    ``seed`` seeds ``self._rng``, the generator that shuffles the training data.

    >>> import numpy as np, elman
    >>> model = Sequential([elman.Embedding(50, 8, seed=0), elman.RNN(8, 16, seed=1),
    ...                     elman.Last(), elman.Dense(16, 1, activation="sigmoid", seed=2)],
    ...                    seed=0)
    >>> model.compile("rmsprop", "binary_crossentropy", metrics=["accuracy"])
    >>> x = np.random.default_rng(0).integers(1, 50, size=(64, 10))    # (N, T) token ids
    >>> y = (x[:, -1] > 25).astype(np.float32)                          # (N,) labels
    >>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss', 'lr']
    >>> model.predict(x[:3]).shape
    (3, 1)
    """

    def __init__(self, layers=None, seed=None):
        super().__init__()
        self._kinds: list[str] = []
        self._rng = _validate.rng(seed)
        self.optimizer = None
        self.loss = None
        self.metrics: list[Metric] = []
        self.epoch = 0                       # completed epochs
        self.stop_training = False
        self.history = None
        self._compile_args: dict | None = None     # compile()'s arguments as plain data
        self._masked_loss = None                     # the loss with reduction='none'
        self._clip = dict(clipnorm=None, clipvalue=None, global_clipnorm=None)
        self._cache = None
        self._input_spec = None              # (shape without the samples axis, dtype) seen last
        if layers is not None:
            if isinstance(layers, Module):
                raise TypeError("Sequential takes a list of layers, got a single "
                                f"{type(layers).__name__}; write Sequential([layer])")
            for layer in layers:
                self.add(layer)

    # -- structure -------------------------------------------------------------------------
    def add(self, layer: Module) -> None:
        """Append a layer (registered as ``str(len(self))``)."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: layer {len(self._kinds)} must be an elman Module, got "
                            f"{type(layer).__name__}")
        if isinstance(layer, (RecurrentLayer, MinimalLayer)):
            kind = "recurrent"
        elif isinstance(layer, _SequencePicker):
            kind = "picker"
        elif isinstance(layer, Sequential):
            kind = "sequential"              # a nested model: samples first, like this one
        else:
            try:
                takes_lengths = "lengths" in inspect.signature(layer.forward).parameters
            except (TypeError, ValueError):
                takes_lengths = False
            kind = "lengths" if takes_lengths else "plain"
        setattr(self, str(len(self._kinds)), layer)
        self._kinds.append(kind)

    @property
    def layers(self) -> list[Module]:
        return [self._modules[str(i)] for i in range(len(self._kinds))]

    def __len__(self) -> int:
        return len(self._kinds)

    def __getitem__(self, i):
        return self.layers[i]

    def reset_states(self) -> None:
        """Forget the states that stateful recurrent layers carry between calls (Keras'
        ``model.reset_states()``; see :mod:`elman.stateful`)."""
        reset_states(self)

    @property
    def stateful(self) -> bool:
        """Whether a layer carries its states from one call to the next."""
        return is_stateful(self)

    def config(self) -> dict:
        """The architecture as plain JSON-able data: ``{"layers": [{"class", "config"}, ...]}``
        (what :func:`elman.save` stores; the weights are stored separately)."""
        out = []
        for i, layer in enumerate(self.layers):
            cfg = getattr(layer, "config", None)
            if not callable(cfg):
                raise TypeError(f"Sequential.config: layer {i} ({type(layer).__name__}) has no "
                                f"config() method, so it cannot be described as JSON")
            out.append({"class": type(layer).__name__, "config": cfg()})
        return {"layers": out}

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every parameter, in ``named_parameters()`` order (Keras' name)."""
        return [p.data.copy() for p in self.parameters()]

    def set_weights(self, weights) -> None:
        """Load a list as returned by :meth:`get_weights` (checked like ``load_state_dict``)."""
        names = [n for n, _ in self.named_parameters()]
        weights = list(weights)
        if len(weights) != len(names):
            raise ValueError(f"set_weights: expected {len(names)} arrays (one per parameter), "
                             f"got {len(weights)}")
        self.load_state_dict(dict(zip(names, weights)))

    def _sequence_effects(self) -> list:
        """Per layer: "seq" (outputs a sequence), "pick" (sequence in, no time axis out) or
        None (keeps whatever it gets)."""
        effects = []
        for layer, kind in zip(self.layers, self._kinds):
            if kind == "recurrent":
                effects.append("seq")
            elif kind == "picker":
                effects.append("pick")
            elif kind == "sequential" and layer._has_sequence_layers:
                effects.append("seq" if layer._output_is_sequence() else "pick")
            else:
                effects.append(None)
        return effects

    @property
    def _has_sequence_layers(self) -> bool:
        return any(self._sequence_effects())

    def _output_is_sequence(self) -> bool:
        """Whether the output keeps a time axis (no picker after the sequence layers)."""
        seq = False
        for effect in self._sequence_effects():
            if effect is not None:
                seq = effect == "seq"
        return seq

    # -- forward / backward ----------------------------------------------------------------
    def forward(self, x, lengths=None):
        """Run the layers on a batch, samples first (see the class docstring for layouts).

        ``lengths`` (one int per sample, 1..T) describes right-padded sequences. Returns the
        last layer's output with the samples on axis 0.
        """
        return self._forward(x, lengths)

    def _forward(self, x, lengths=None, record=None):
        """:meth:`forward`; ``record`` (a list) receives each layer's output shape, samples
        first, and whether axis 1 of it is time."""
        h = np.asarray(x)
        if lengths is not None:
            if not self._has_sequence_layers:
                raise ValueError("Sequential: lengths were given but the model has no recurrent "
                                 "layer or sequence picker to use them")
            if h.ndim < 2:
                raise ValueError(f"Sequential: lengths need sequences (N, T, ...), got input of "
                                 f"shape {h.shape}")
            lengths = _validate.lengths(lengths, h.shape[0], h.shape[1], "Sequential")
        time_major = False          # are axes (0, 1) of h currently (T, N)?
        has_time = self._has_sequence_layers
        swaps = []
        for i, (layer, kind) in enumerate(zip(self.layers, self._kinds)):
            swapped = False
            if kind in ("recurrent", "picker"):
                if h.ndim != 3:
                    shape = h.shape if not time_major else (h.shape[1], h.shape[0]) + h.shape[2:]
                    raise ValueError(
                        f"Sequential: layer {i} ({type(layer).__name__}) needs a batch of "
                        f"sequences (N, T, F), samples first, but receives an array of shape "
                        f"{shape}" + (" (a recurrent layer cannot follow a sequence picker)"
                                      if not has_time else ""))
                want = not layer.batch_first
                if want != time_major:
                    h, swapped = h.swapaxes(0, 1), True
                if kind == "recurrent":
                    h, _ = layer(h, None, lengths=lengths)
                    time_major = want
                else:
                    h = layer(h, lengths=lengths)
                    time_major, has_time = False, False
            elif kind == "sequential":
                if time_major:
                    h, swapped, time_major = h.swapaxes(0, 1), True, False
                # a nested model without sequence layers works step-wise: no lengths for it
                h = layer(h, lengths=lengths if layer._has_sequence_layers else None)
                if layer._has_sequence_layers:
                    has_time = layer._output_is_sequence()
            elif kind == "lengths":
                h = layer(h, lengths=lengths)
            else:
                h = layer(h)
            swaps.append(swapped)
            if record is not None:
                shape = (h.shape[1], h.shape[0]) + h.shape[2:] if has_time and time_major \
                    else h.shape
                record.append((shape, has_time))
        final_swap = has_time and time_major
        if final_swap:
            h = h.swapaxes(0, 1)
        self._save_for_backward((swaps, final_swap))
        return h

    def backward(self, grad_out):
        """Backpropagate through the layers in reverse; returns the gradient wrt the input
        (None when the first layer is an ``Embedding``: integer input has no gradient).
        Recurrent layers get no gradient for their (dropped) final states."""
        if self._cache is None:
            raise RuntimeError("Sequential.backward called before forward: run the model on a "
                               "batch first (a forward under elman.no_grad() saves nothing)")
        swaps, final_swap = self._cache
        g = np.asarray(grad_out)
        if final_swap:
            g = g.swapaxes(0, 1)
        for i in reversed(range(len(self._kinds))):
            layer = self._modules[str(i)]
            if self._kinds[i] == "recurrent":
                g, _ = layer.backward(g, None)
            else:
                g = layer.backward(g)
            if g is None:               # an Embedding: nothing flows below integer indices
                return None
            if swaps[i]:
                g = g.swapaxes(0, 1)
        return g

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, clipnorm=None,
                clipvalue=None, global_clipnorm=None):
        """Choose the optimizer, the loss and the metrics.

        ``optimizer``: a Keras name ("sgd", "rmsprop", "adagrad", "adam", "adamw"; Keras'
        default hyper-parameters, see :func:`elman.optim.get_optimizer`), an elman optimizer
        class, or an instance built on ``model.parameters()``.
        ``loss``: a Keras name (see :data:`elman.losses.LOSSES`: "mse", "mae", "huber",
        "binary_crossentropy" on probabilities, i.e. after a sigmoid ``Dense``,
        "sparse_categorical_crossentropy" on logits), a loss object or class, or a function
        ``(pred, y) -> (value, grad)``.
        ``metrics``: names from :data:`METRICS` ("accuracy"/"acc" picks binary or sparse
        categorical accuracy from the loss, as Keras does; "binary_accuracy",
        "sparse_categorical_accuracy", "mae", "mse", "rmse"), :class:`Metric` objects or
        functions ``(pred, y) -> float``.
        ``clipnorm`` clips each parameter's gradient to that norm (Keras' meaning);
        ``global_clipnorm`` clips all of them together (``clip_grad_norm_``, PyTorch's usual
        clipping); ``clipvalue`` clips every element. Applied after backward, before the step.
        """
        if loss is None:
            raise ValueError(f"compile: a loss is required, e.g. loss='mse'; known names: "
                             f"{sorted(_losses.LOSSES)}")
        loss_obj = self._build_loss(loss)
        if getattr(loss_obj, "reduction", "mean") == "none":
            raise ValueError("compile: the loss must reduce to one number (reduction='mean' or "
                             "'sum'), got reduction='none'")
        if not self.parameters():
            raise ValueError("compile: the model has no parameters to train")
        opt = _optim.get_optimizer(optimizer, self.parameters())
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, Metric)) or callable(metrics):
            metrics = [metrics]
        metric_objs = [get_metric(m, loss_obj) for m in metrics]
        names = [m.name for m in metric_objs]
        dup = sorted({n for n in names if names.count(n) > 1} | ({"loss", "lr"} & set(names)))
        if dup:
            raise ValueError(f"compile: metric names must be unique and not 'loss' or 'lr', got "
                             f"{names}")
        clip = {}
        for name, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                            ("global_clipnorm", global_clipnorm)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, numbers.Real) or not value > 0):
                raise ValueError(f"compile: {name} must be a number > 0 or None, got {value!r}")
            clip[name] = None if value is None else float(value)
        self.optimizer = opt
        self.loss = loss_obj
        self.metrics = metric_objs
        self._masked_loss = None
        if isinstance(loss_obj, _losses.Loss):
            self._masked_loss = copy.copy(loss_obj)
            self._masked_loss.reduction = "none"
        specs = [self._metric_spec(m, o) for m, o in zip(metrics, metric_objs)]
        self._compile_args = dict(loss=self._loss_spec(loss, loss_obj),
                                  metrics=[m for m in specs if m is not None], **clip)
        self._clip = clip

    @staticmethod
    def _build_loss(loss):
        if isinstance(loss, dict):           # {"class": "HuberLoss", "config": {...}}
            if set(loss) != {"class", "config"} or not isinstance(loss["config"], dict):
                raise ValueError(f"compile: a loss given as a dict must be {{'class': name, "
                                 f"'config': {{...}}}}, got {loss!r}")
            cls = getattr(_losses, str(loss["class"]), None)
            if not (isinstance(cls, type) and issubclass(cls, _losses.Loss)):
                raise ValueError(f"unknown loss class {loss['class']!r}")
            return cls(**loss["config"])
        return _losses.get_loss(loss)

    @staticmethod
    def _loss_spec(given, obj):
        """The loss as JSON-able data: the Keras name, or ``{"class", "config"}``."""
        if isinstance(given, str):
            return given
        if isinstance(obj, _losses.Loss):
            params = inspect.signature(type(obj).__init__).parameters
            cfg = {k: getattr(obj, k) for k in params if k != "self" and hasattr(obj, k)}
            return {"class": type(obj).__name__, "config": cfg}
        return getattr(obj, "__name__", type(obj).__name__)   # a function: not restorable

    @staticmethod
    def _metric_spec(given, obj):
        if isinstance(given, str):
            return given
        if type(obj) in METRICS.values() and obj.name in METRICS:
            return obj.name
        return None                              # a custom metric: not restorable by name

    def compile_config(self) -> dict | None:
        """``compile``'s arguments as plain data (what :func:`elman.save` stores), so that
        ``model.compile(**model.compile_config())`` compiles a rebuilt model the same way.
        The optimizer appears by class name; its hyper-parameters and state are saved with
        ``optimizer.state_dict()``. Metrics given as functions are left out. None when the
        model has not been compiled."""
        if self.optimizer is None or self._compile_args is None:
            return None
        return dict(optimizer=type(self.optimizer).__name__, **copy.deepcopy(self._compile_args))

    def _require_compiled(self, what: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"You must compile the model before calling {what}(): call "
                               f"model.compile(optimizer, loss, metrics) first")

    # -- data preparation ------------------------------------------------------------------
    def _prepare(self, x, y, lengths, mask_value, prefix: str = ""):
        """Checked arrays ``(x, y, lengths, order)`` for fit/evaluate; y may be None."""
        x = _as_data(f"{prefix}x", x)
        if y is not None:
            y = _as_data(f"{prefix}y", y)
            if len(x) != len(y):
                raise ValueError(f"{prefix}x has {len(x)} samples but {prefix}y has {len(y)}")
        if lengths is not None and mask_value is not None:
            raise ValueError("give lengths or mask_value, not both")
        order = None
        if mask_value is not None:
            x, lengths, order = _lengths_from_mask(x, mask_value, f"{prefix}x")
            if order is not None and y is not None and self._output_is_sequence() \
                    and y.ndim >= 2 and y.shape[:2] == x.shape[:2]:
                y = _reorder(y, order)            # per-step targets move with their steps
        elif lengths is not None:
            if x.ndim < 2:
                raise ValueError(f"{prefix}lengths need sequences (N, T, ...), got {prefix}x of "
                                 f"shape {x.shape}")
            lengths = _validate.lengths(lengths, len(x), x.shape[1], "Sequential")
        valid = None
        if lengths is not None and x.dtype.kind == "f":
            valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
            if not np.isfinite(x).all():          # padding may hold anything: make it 0
                _check_finite(f"{prefix}x", x, valid)
                x = np.where(_expand(valid, x.ndim), x, 0).astype(x.dtype)
        _check_finite(f"{prefix}x", x, valid)
        if y is not None:
            _check_finite(f"{prefix}y", y)
        return x, y, lengths, order

    def _step_mask(self, lengths, pred):
        """(N, T) valid-step mask for per-step outputs of a variable-length batch, else None."""
        if lengths is None or not self._output_is_sequence() or pred.ndim < 2:
            return None
        T = pred.shape[1]
        mask = np.arange(T)[None, :] < lengths[:, None]
        return None if mask.all() else mask

    def _loss(self, pred, y, mask):
        """(value, dvalue/dpred, denominator), ignoring padded steps when ``mask`` is given.
        ``denominator`` is what a mean divided by (None for a summed loss; the batch size for
        a plain callable), which a distributed fit needs to average across ranks exactly."""
        if not isinstance(self.loss, _losses.CrossEntropyLoss):
            y = _like(pred, y)
        elif y.shape == pred.shape[:-1] + (1,):
            y = y[..., 0]
        if not isinstance(self.loss, _losses.Loss):
            return (*self.loss(pred, y), float(len(pred)))
        mean = self.loss.reduction == "mean"
        if mask is None or self._masked_loss is None:
            value, grad = self.loss(pred, y)
            return value, grad, self.loss.mean_denominator(pred, y) if mean else None
        values, grad = self._masked_loss(pred, y)
        mv = np.broadcast_to(_expand(mask, values.ndim), values.shape)
        value = float(values[mv].sum())
        g_mask = _expand(mask, grad.ndim).astype(grad.dtype)
        grad = grad * g_mask
        if not mean:
            return value, grad, None
        count = max(int(np.count_nonzero(mv)), 1)
        return value / count, grad / count, float(count)

    # -- fit -------------------------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, callbacks=None, verbose=1, initial_epoch=0, lengths=None,
            mask_value=None, seed=None, distributed=None, validation_batch_size=None):
        """Train for ``epochs - initial_epoch`` epochs; returns a :class:`History`.

        ``x``, ``y``: samples on axis 0 (see the class docstring). ``validation_split``: the
        fraction of samples held out, taken from the *end* of the arrays before shuffling (as
        Keras does); or ``validation_data=(x_val, y_val)`` or ``(x_val, y_val, lengths_val)``.
        ``shuffle``: a new order every epoch, drawn from ``self._rng`` (reseeded by ``seed``).
        ``initial_epoch``: resume a run (``fit(..., initial_epoch=model.epoch)`` after
        :func:`elman.load`). ``lengths``/``mask_value``: variable-length sequences.
        ``verbose``: 0 silent, 1 a progress bar per epoch (tqdm, when installed and writing to a
        terminal; otherwise one line per epoch), 2 one line per epoch.

        Each epoch's logs (and ``History.history``) hold ``loss``, the metrics, ``val_loss`` and
        ``val_<metric>`` with validation data, and ``lr`` (the learning rate of the epoch).
        Data with NaN or infinity is refused before training (``ValueError`` naming the first
        bad sample). A non-finite loss stops training with a ``FloatingPointError`` naming the
        epoch and batch, raised before that batch's update and before any callback could save
        broken weights, so the last good checkpoint stays in place; so do parameters that
        became non-finite during an epoch (checked before the epoch's callbacks).

        **Stateful models** (a recurrent layer built with ``stateful=True``, see
        :mod:`elman.stateful`) train with truncated backpropagation through time over
        contiguous streams: sample ``b * batch_size + n`` must continue sample ``(b - 1) *
        batch_size + n`` (the layout :func:`elman.data.stream_windows` makes, with
        ``batch_size`` streams), so ``shuffle=False`` is required and the number of samples
        must be a whole number of batches. The carried states are reset at the start of
        every epoch and before validation; gradients stop at each batch's first step.
        ``validation_batch_size`` (default ``batch_size``) is the batch size of the
        validation data, its number of streams for a stateful model.

        ``distributed="mpi"`` trains data-parallel on every rank of ``MPI.COMM_WORLD`` (start
        the script with ``mpiexec -n K``; see :mod:`elman.distributed`): ``batch_size`` stays
        the global batch, each rank computes its slice of it, one ``Allreduce`` per step sums
        the gradients, and the run ends at the weights of one process training on the same
        batches. Rank 0 alone runs the ``root_only`` callbacks (files, progress).
        """
        self._require_compiled("fit")
        batch_size = _positive_int("batch_size", batch_size)
        epochs = _nonneg_int("epochs", epochs)
        initial_epoch = _nonneg_int("initial_epoch", initial_epoch)
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
                or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be a number in [0, 1), got "
                             f"{validation_split!r}")
        if validation_split and validation_data is not None:
            raise ValueError("give validation_split or validation_data, not both")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        shuffle = _validate.flag("shuffle", shuffle)
        validation_batch_size = batch_size if validation_batch_size is None else \
            _positive_int("validation_batch_size", validation_batch_size)
        x, y, lengths, _ = self._prepare(x, y, lengths, mask_value)

        val = None
        if validation_split:
            n = len(x)
            split_at = int(math.floor(n * (1.0 - validation_split)))
            if split_at == 0 or split_at == n:
                raise ValueError(f"validation_split={validation_split} leaves {split_at} "
                                 f"training and {n - split_at} validation samples out of {n}; "
                                 f"both need at least one")
            val = (x[split_at:], y[split_at:], None if lengths is None else lengths[split_at:])
            x, y = x[:split_at], y[:split_at]
            lengths = None if lengths is None else lengths[:split_at]
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, "
                                 "y_val, lengths_val)")
            vx, vy = validation_data[:2]
            vl = validation_data[2] if len(validation_data) == 3 else None
            vx, vy, vl, _ = self._prepare(vx, vy, vl, mask_value if vl is None else None,
                                          "validation_data: ")
            val = (vx, vy, vl)

        if self.stateful:
            _check_streams(x, val, shuffle, batch_size, validation_batch_size)
        if seed is not None:
            self._rng = _validate.rng(seed)
        comm = _distributed.resolve(distributed)
        with _distributed.abort_on_error(comm):
            return self._fit(x, y, val, epochs, batch_size, shuffle, callbacks, verbose,
                             initial_epoch, lengths, comm, validation_batch_size)

    def _fit(self, x, y, val, epochs, batch_size, shuffle, callbacks, verbose, initial_epoch,
             lengths, comm, validation_batch_size=None):
        n = len(x)
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            name = type(callbacks).__name__
            raise TypeError(f"callbacks must be a list of callbacks, got {name}; write "
                            f"callbacks=[{name}(...)]")
        reducer = None
        if comm is not None:
            # (a stateful model's validation is not split by rank: it may hold one stream)
            for what, count in (("training", n), ("validation", None if val is None
                                                  or self.stateful else len(val[0]))):
                if count is not None and count < comm.size:
                    raise ValueError(f"distributed fit: {comm.size} ranks need at least "
                                     f"{comm.size} {what} samples (one each), got {count}")
            _distributed.broadcast_parameters(comm, self.parameters())
            _threads.share_cpus(comm.local_size)     # ranks, not threads, share a host's CPUs
            reducer = _distributed.GradientReducer(comm, self.optimizer.params)
        root = comm is None or comm.is_root
        steps = math.ceil(n / batch_size)
        history = History()
        cbs = list(callbacks or []) + [history]      # History sees the logs callbacks leave
        if verbose:
            cbs.append(_ProgressLogger(verbose))
        if not root:
            cbs = [c for c in cbs if not getattr(c, "root_only", False)]
        cb = CallbackList(cbs, self, dict(
            epochs=epochs, steps=steps, verbose=verbose, samples=n, batch_size=batch_size,
            # time steps per sample and the validation set's size, for time estimates
            length=x.shape[1] if x.ndim >= 2 and self._has_sequence_layers else 1,
            validation_samples=0 if val is None else len(val[0]),
            validation_length=1 if val is None or val[0].ndim < 2 else val[0].shape[1],
            validation_steps=0 if val is None else
            math.ceil(len(val[0]) / (validation_batch_size or batch_size))))
        stateful = self.stateful
        validation_batch_size = validation_batch_size or batch_size
        self.history = history
        self.stop_training = False
        was_training = self.training
        self._input_spec = (x.shape[1:], x.dtype)
        try:
            cb.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                self.train()
                if comm is not None:
                    _distributed.sync_generators(comm, self)
                if stateful:                 # every epoch reads the streams from their start
                    self.reset_states()
                cb.on_epoch_begin(epoch, {})
                lr = float(self.optimizer.lr)
                logs = self._train_epoch(x, y, lengths, batch_size, shuffle, epoch, epochs, cb,
                                         reducer)
                if val is not None:
                    if stateful:             # the validation streams from their start
                        self.reset_states()
                    cb.on_test_begin({})
                    # a stateful model's streams are rows of every batch: not split by rank
                    scores = self._evaluate_arrays(*val, validation_batch_size,
                                                   None if stateful else comm, cb)
                    cb.on_test_end(scores)
                    logs.update({f"val_{k}": v for k, v in scores.items()})
                logs["lr"] = lr
                bad = [name for name, p in self.named_parameters()
                       if not np.all(np.isfinite(p.data))]
                if bad:
                    raise FloatingPointError(
                        f"training diverged in epoch {epoch + 1}/{epochs}: parameters {bad} hold "
                        f"NaN or infinity after the last step; the epoch's callbacks were not "
                        f"run, so no checkpoint holds these weights (lower the learning rate or "
                        f"clip gradients: compile(..., clipnorm=1.0))")
                self.epoch = epoch + 1
                cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            cb.on_train_end({})
            if comm is not None:
                comm.barrier()          # rank 0's last files are written when fit returns
        finally:
            self.train(was_training)
        return history

    def _train_epoch(self, x, y, lengths, batch_size, shuffle, epoch, epochs, cb,
                     reducer=None) -> dict:
        n = len(x)
        order = self._rng.permutation(n) if shuffle else None
        steps = math.ceil(n / batch_size)
        total_loss = 0.0
        for m in self.metrics:
            m.reset()
        for b in range(steps):
            start, stop = b * batch_size, min((b + 1) * batch_size, n)
            size = stop - start                 # the global batch
            # unshuffled, one process: a slice (a view, no copy of the batch)
            idx = slice(start, stop) if order is None else order[start:stop]
            if reducer is not None:             # this rank's part of the global batch
                idx = reducer.comm.shard(np.arange(start, stop) if order is None else idx)
            xb, yb = x[idx], y[idx]
            lb = None if lengths is None else lengths[idx]
            cb.on_batch_begin(b, {})
            # forward, loss
            self.zero_grad()
            pred, mask, grad, denominator = None, None, None, 0.0
            value, finite_output = 0.0, True
            if len(xb):
                pred = self.forward(xb, lengths=lb)
                mask = self._step_mask(lb, pred)
                finite_output = bool(np.all(np.isfinite(pred)))
                value, grad, denominator = (self._loss(pred, yb, mask) if finite_output
                                            else (float("nan"), None, 1.0))
            if reducer is not None:
                # backward first (local), then one Allreduce turns the local gradients and
                # loss into the global batch's; every rank sees the same value below
                if grad is not None and math.isfinite(value):
                    self.backward(grad)
                value = reducer.reduce(value, denominator)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"non-finite loss ({value}) in epoch {epoch + 1}/{epochs}, batch {b + 1}/"
                    f"{steps}" + ("" if finite_output else " (the model's output holds NaN or "
                                  "infinity)") + ": training stopped before this batch's update; "
                    "no checkpoint was written from it (the last good one is untouched). Lower "
                    "the learning rate, clip gradients (compile(..., clipnorm=1.0)) or check the "
                    "data")
            # backward, clip, step
            if reducer is None:
                self.backward(grad)
            self._clip_gradients()
            self.optimizer.step()
            # log
            total_loss += value * size
            if pred is not None:
                for m in self.metrics:
                    m.update(pred, yb, mask)
            cb.on_batch_end(b, {"loss": value, "size": size})
            if self.stop_training:
                break
        seen = min(n, (b + 1) * batch_size)
        if reducer is not None:
            _reduce_metrics(reducer.comm, self.metrics)
        logs = {"loss": total_loss / seen}
        logs.update({m.name: m.result() for m in self.metrics})
        return logs

    def _clip_gradients(self) -> None:
        clip = self._clip
        params = self.optimizer.params
        if clip["clipvalue"] is not None:
            _optim.clip_grad_value_(params, clip["clipvalue"])
        if clip["clipnorm"] is not None:
            for p in params:
                _optim.clip_grad_norm_([p], clip["clipnorm"])
        if clip["global_clipnorm"] is not None:
            _optim.clip_grad_norm_(params, clip["global_clipnorm"])

    # -- evaluate / predict ----------------------------------------------------------------
    @no_grad()                      # nothing is differentiated: the layers keep nothing
    def _evaluate_arrays(self, x, y, lengths, batch_size, comm=None, cb=None) -> dict:
        """Loss and metrics in evaluation mode; with ``comm`` each rank takes a contiguous
        part of the samples and the sums are combined across ranks. ``cb`` (a CallbackList)
        hears ``on_test_batch_end`` after every batch."""
        was_training = self.training
        self.eval()
        try:
            n = len(x)
            if comm is not None:
                part = comm.shard(np.arange(n))
                x, y = x[part], y[part]
                lengths = None if lengths is None else lengths[part]
            total = 0.0
            for m in self.metrics:
                m.reset()
            for start in range(0, len(x), batch_size):
                sl = slice(start, start + batch_size)
                lb = None if lengths is None else lengths[sl]
                pred = self.forward(x[sl], lengths=lb)
                mask = self._step_mask(lb, pred)
                value, _, _ = self._loss(pred, y[sl], mask)
                total += value * len(pred)
                for m in self.metrics:
                    m.update(pred, y[sl], mask)
                if cb is not None:
                    cb.on_test_batch_end(start // batch_size, {"size": len(pred)})
            if comm is not None:
                total = _reduce_metrics(comm, self.metrics, total)
            logs = {"loss": total / n}
            logs.update({m.name: m.result() for m in self.metrics})
            return logs
        finally:
            self.train(was_training)

    def evaluate(self, x, y, batch_size=32, lengths=None, mask_value=None, verbose=0,
                 return_dict=False):
        """Loss and metrics on ``(x, y)`` in evaluation mode (no dropout), batched.

        Returns, as Keras does, the loss alone when there are no metrics, else the list
        ``[loss, metric1, ...]`` in ``compile`` order; ``return_dict=True`` gives
        ``{"loss": ..., "<metric>": ...}``.
        """
        self._require_compiled("evaluate")
        batch_size = _positive_int("batch_size", batch_size)
        x, y, lengths, _ = self._prepare(x, y, lengths, mask_value)
        logs = self._evaluate_arrays(x, y, lengths, batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        if not self.metrics:
            return logs["loss"]
        return [logs["loss"]] + [logs[m.name] for m in self.metrics]

    @no_grad()
    def predict(self, x, batch_size=32, lengths=None, mask_value=None, verbose=0):
        """The model's output for ``x`` in evaluation mode and under :func:`elman.no_grad`
        (nothing is kept for a backward), computed ``batch_size`` samples at a time, samples
        first. With ``mask_value``, per-step outputs are returned at the steps
        of the original (padded) input."""
        batch_size = _positive_int("batch_size", batch_size)
        x, _, lengths, order = self._prepare(x, None, lengths, mask_value)
        was_training = self.training
        self.eval()
        try:
            outs = []
            for start in range(0, len(x), batch_size):
                sl = slice(start, start + batch_size)
                outs.append(np.array(self.forward(
                    x[sl], lengths=None if lengths is None else lengths[sl])))
        finally:
            self.train(was_training)
        out = np.concatenate(outs, axis=0)
        if order is not None and self._output_is_sequence():
            out = _restore_order(out, order)
        if verbose:
            print(f"predicted {len(out)} samples")
        return out

    # -- summary ---------------------------------------------------------------------------
    def summary(self, input_shape=None, print_fn=print):
        """A Keras-like table of the layers, their output shapes and parameter counts.

        Output shapes come from running a batch of zeros through the model in evaluation mode
        (no random numbers are drawn). ``input_shape`` is one sample's shape, e.g. ``(T, F)`` or
        ``(T,)`` for token ids (``None`` for an unknown length); without it the shape of the
        data last given to ``fit`` is used, or one inferred from the first layer. ``None`` in
        the table means "any size". ``print_fn(text)`` receives the table; with
        ``print_fn=None`` it is returned instead.
        """
        shapes = self._layer_shapes(input_shape)
        rows = []
        for i, layer in enumerate(self.layers):
            count = sum(p.data.size for p in layer.parameters())
            shape = "?" if shapes is None else str(shapes[i]).replace(",)", ")")
            rows.append((f"{i} ({type(layer).__name__})", shape, f"{count:,}"))
        total = sum(p.data.size for p in self.parameters())
        w1 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 3
        w2 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 3
        w3 = max([len("Param #")] + [len(r[2]) for r in rows])
        width = w1 + w2 + w3
        lines = ['Model: "Sequential"', "_" * width,
                 f"{'Layer (type)':<{w1}}{'Output Shape':<{w2}}{'Param #':>{w3}}", "=" * width]
        for k, (a, b, c) in enumerate(rows):
            lines.append(f"{a:<{w1}}{b:<{w2}}{c:>{w3}}")
            if k < len(rows) - 1:
                lines.append("_" * width)
        lines += ["=" * width, f"Total params: {total:,}", f"Trainable params: {total:,}",
                  "Non-trainable params: 0", "_" * width]
        text = "\n".join(lines)
        if print_fn is None:
            return text
        print_fn(text)
        return None

    def _dummy_input(self, input_shape):
        """A 2-sample zero batch and the axes (of a sample) whose size is unknown."""
        layers = self.layers
        first = layers[0] if layers else None
        dtype = next((p.data.dtype for p in self.parameters()), np.dtype(np.float32))
        integer = isinstance(first, Embedding)
        if input_shape is None and self._input_spec is not None:
            shape, spec_dtype = self._input_spec
            shape, unknown = list(shape), set()
            if len(shape) >= 1 and self._has_sequence_layers:
                unknown.add(0)                           # T varies between datasets
            integer = spec_dtype.kind in "iub"
        elif input_shape is not None:
            shape = list(input_shape) if isinstance(input_shape, (tuple, list)) \
                else [input_shape]
            unknown = {k for k, s in enumerate(shape) if s is None}
        elif isinstance(first, Embedding):
            shape, unknown = [None], {0}
        elif isinstance(first, (RecurrentLayer, MinimalLayer)):
            shape, unknown = [None, first.input_size], {0}
        elif isinstance(first, Linear):
            shape, unknown = [first.in_features], set()
        else:
            return None, None
        shape = [3 if s is None else int(s) for s in shape]
        x = np.zeros([2] + shape, np.int64 if integer else dtype)
        return x, unknown

    def _layer_shapes(self, input_shape):
        x, unknown = self._dummy_input(input_shape)
        if x is None:
            return None
        record = []
        was_training, saved_cache = self.training, self._cache
        self.eval()                                    # no dropout: no random numbers drawn
        try:
            with states_kept(self):                    # a stateful model carries on as it was
                self._forward(x, record=record)
        except (ValueError, TypeError, IndexError):
            return None
        finally:
            self.train(was_training)
            self._cache = saved_cache
        shapes = []
        for shape, has_time in record:
            shape = [None] + list(shape[1:])
            if has_time and len(shape) >= 2 and 0 in unknown:
                shape[1] = None
            shapes.append(tuple(shape))
        return shapes


def _check_streams(x, val, shuffle: bool, batch_size: int, validation_batch_size: int) -> None:
    """What a stateful fit needs of its data: batches in stream order, all of one size."""
    if shuffle:
        raise ValueError("fit: the model is stateful (a recurrent layer has stateful=True), so "
                         "sample n of each batch must continue sample n of the batch before; "
                         "shuffling would break the streams: pass shuffle=False (and data laid "
                         "out by elman.data.stream_windows)")
    for what, n, size, name in (("training", len(x), batch_size, "batch_size"),
                                ("validation", None if val is None else len(val[0]),
                                 validation_batch_size, "validation_batch_size")):
        if n is not None and n % size:
            raise ValueError(f"fit: the model is stateful, so every batch must hold the same "
                             f"streams, but the {n} {what} samples are not a whole number of "
                             f"batches of {name}={size}; give a multiple of {size} samples "
                             f"(elman.data.stream_windows with streams={size} does)")


def _reduce_metrics(comm, metrics, total: float = 0.0) -> float:
    """Sum every metric's (total, count) and ``total`` over the ranks in one Allreduce; the
    metrics then hold the whole epoch's sums. Returns the summed ``total``."""
    buf = np.array([total] + [v for m in metrics for v in m.state()], dtype=np.float64)
    comm.allreduce_(buf)
    for k, m in enumerate(metrics):
        m.set_state(buf[1 + 2 * k], buf[2 + 2 * k])
    return float(buf[0])


class _ProgressLogger(Callback):
    """Progress output of ``fit``.

    ``verbose=1`` on a terminal (with tqdm installed): a bar per epoch with the running
    training loss, and when the epoch ends its training and validation scores, fitted into the
    terminal's width (names shortened, then the least important left out). ``verbose=1``
    elsewhere (a log file, a pipe): a line every ``every`` seconds inside a long epoch and its
    validation, and one per epoch. ``verbose=2``: one line per epoch."""

    root_only = True
    every = 10.0

    def __init__(self, verbose: int):
        super().__init__()
        self.verbose = verbose
        self._bar = None
        self._tqdm = None
        if verbose == 1 and getattr(sys.stdout, "isatty", lambda: False)():
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm
            except ImportError:
                pass

    def _desc(self, epoch) -> str:
        return f"Epoch {epoch + 1}/{self.params['epochs']}"

    def _note(self, text: str) -> None:
        """A progress line, at most every ``every`` seconds (verbose=1 without a bar)."""
        now = time.perf_counter()
        if self.verbose == 1 and self._bar is None and now - self._last >= self.every:
            self._last = now
            print(f"{self._desc(self._epoch)} - {text} - {_duration(now - self._start)}",
                  flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last = time.perf_counter()
        self._epoch = epoch
        self._seen, self._loss = 0, 0.0
        if self._tqdm is not None:
            self._width = shutil.get_terminal_size((80, 24)).columns
            self._bar = self._tqdm(
                total=self.params["steps"], unit="batch", leave=True, desc=self._desc(epoch),
                file=sys.stdout, ncols=self._width, bar_format="{desc} {percentage:3.0f}%|{bar}|"
                " {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}")

    def on_batch_end(self, batch, logs=None):
        logs = logs or {}
        self._seen += logs.get("size", 1)
        self._loss += logs.get("loss", 0.0) * logs.get("size", 1)
        loss = self._loss / max(self._seen, 1)
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            self._bar.update(1)
        else:
            self._note(f"batch {batch + 1}/{self.params['steps']} - loss: {loss:.4f}")

    def on_test_begin(self, logs=None):
        if self._bar is not None:
            self._bar.set_postfix_str("validating", refresh=True)

    def on_test_batch_end(self, batch, logs=None):
        self._note(f"validation batch {batch + 1}/{self.params.get('validation_steps', '?')}")

    def on_epoch_end(self, epoch, logs=None):
        scores = {k: v for k, v in (logs or {}).items()
                  if k != "lr" and isinstance(v, (float, int))}
        seconds = time.perf_counter() - self._start
        if self._bar is not None:
            steps = self.params["steps"]
            head = f"{self._desc(epoch)} {self._bar.n}/{steps} [{_duration(seconds)}]"
            self._bar.bar_format = "{desc}{postfix}"
            self._bar.set_description_str(head, refresh=False)
            self._bar.set_postfix_str(fit_scores(scores, self._width - len(head) - 3),
                                      refresh=False)
            self._bar.close()
            self._bar = None
        else:
            print(f"{self._desc(epoch)} - {_duration(seconds)} - "
                  + " - ".join(f"{k}: {v:.4f}" for k, v in scores.items()), flush=True)


def fit_scores(scores: dict, width: int) -> str:
    """``"loss 0.6931 val_loss 0.7012 ..."`` in at most ``width`` characters: losses first,
    each metric beside its validation twin; names of several words shortened to their
    initials (``val_bits_per_char`` -> ``val_bpc``) when the whole does not fit, then long
    words to three letters (``accuracy`` -> ``acc``) and three digits, then the last entries
    left out.

    >>> fit_scores({"accuracy": 0.5, "loss": 0.69, "val_accuracy": 0.25, "val_loss": 0.7}, 80)
    'loss 0.69 val_loss 0.7 accuracy 0.5 val_accuracy 0.25'
    >>> fit_scores({"bits_per_char": 2.5, "val_bits_per_char": 2.75}, 20)
    'bpc 2.5 val_bpc 2.75'
    """
    def order(key):
        base = key[4:] if key.startswith("val_") else key
        return (base != "loss", base, key.startswith("val_"))

    def short(key):
        prefix, base = ("val_", key[4:]) if key.startswith("val_") else ("", key)
        return prefix + ("".join(w[0] for w in base.split("_") if w) if "_" in base else base)

    def shorter(key):                   # and long words to three letters: accuracy -> acc
        name = short(key)
        prefix, base = ("val_", name[4:]) if name.startswith("val_") else ("", name)
        return prefix + (base[:3] if len(base) > 4 else base)

    keys = sorted(scores, key=order)
    for name, digits in ((str, 4), (short, 4), (shorter, 4), (shorter, 3)):
        text = " ".join(f"{name(k)} {scores[k]:.{digits}g}" for k in keys)
        if len(text) <= width:
            return text
    parts = []
    for k in keys:
        part = f"{shorter(k)} {scores[k]:.3g}"
        if len(" ".join(parts + [part])) > width:
            break
        parts.append(part)
    return " ".join(parts)


def _duration(seconds: float) -> str:
    """``"850ms"`` or ``"12.3s"``."""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
