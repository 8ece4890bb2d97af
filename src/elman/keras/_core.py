"""The non-recurrent layers of the Keras face: ``Input``, ``Embedding``, ``Dense``, ``Dropout``,
``Masking`` and ``TimeDistributed``, each over the elman layer that computes it.

Shapes are Keras' (samples first): ``Embedding`` takes (N, T) token ids and gives
(N, T, output_dim); ``Dense`` maps the last axis, so on (N, T, F) it acts per time step (as
``TimeDistributed(Dense(...))`` does).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _validate
from .. import layers as _layers
from ._base import (Layer, _shape_tuple, draw_seed, from_spec, get_initializer, register,
                    session_rng)

__all__ = ["Input", "InputLayer", "Embedding", "Dense", "Activation", "Dropout", "Masking",
           "TimeDistributed"]


class InputLayer:
    """What ``Input(shape=...)`` returns: one sample's shape (``None`` for a size that varies,
    e.g. the number of time steps), the batch size if fixed, and the dtype. Added first to a
    :class:`~elman.keras.Sequential`, it lets the model build its layers at once."""

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
        if (shape is None) == (batch_shape is None):
            raise ValueError(f"Input: give shape= (one sample's shape, e.g. (None, 8)) or "
                             f"batch_shape=, exactly one of them; got shape={shape!r}, "
                             f"batch_shape={batch_shape!r}")
        if batch_shape is not None:
            full = _shape_tuple("batch_shape", batch_shape)
            batch_size, shape = full[0], full[1:]
        else:
            shape = _shape_tuple("shape", shape)
            if batch_size is not None:
                batch_size = _validate.positive_int("batch_size", batch_size)
        self.shape = (batch_size,) + tuple(shape)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.name = name or "input_layer"

    def __repr__(self) -> str:
        return f"<Input shape={self.shape}, dtype={self.dtype}>"


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None) -> InputLayer:
    """Keras' ``Input``: ``Input(shape=(None,), dtype="int32")`` for token ids of any length,
    ``Input(shape=(T, F))`` for float sequences. ``batch_size`` fixes the batch (as a
    ``stateful`` layer wants)."""
    return InputLayer(shape, batch_size, dtype, name, batch_shape)


@register
class Embedding(Layer):
    """Token ids (N, T) -> vectors (N, T, output_dim): Keras' ``Embedding``, over
    :class:`elman.Embedding` (whose ``weight`` *is* this layer's ``embeddings``, (input_dim,
    output_dim): the layouts agree). Initialised U(-0.05, 0.05) as in Keras.

    ``mask_zero=True`` makes id 0 padding: the model then gives the recurrent layers each
    sequence's real length (any padding placement; see :class:`~elman.keras.Sequential`).
    ``input_length`` (Keras 2) only fills in the time axis of ``summary()``.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False,
                 input_length=None, name=None, dtype=None, input_shape=None):
        super().__init__(name, dtype, input_shape)
        self.input_dim = _validate.positive_int("input_dim", input_dim)
        self.output_dim = _validate.positive_int("output_dim", output_dim)
        self.mask_zero = _validate.flag("mask_zero", mask_zero)
        self.input_length = None if input_length is None else \
            _validate.positive_int("input_length", input_length)
        self.embeddings_initializer = embeddings_initializer
        get_initializer(embeddings_initializer, "embeddings_initializer")

    def default_input_shape(self):
        return (None, self.input_length)

    def build(self, input_shape=None) -> None:
        if self.built:
            return
        engine = _layers.Embedding(self.input_dim, self.output_dim, dtype=self.dtype, seed=0)
        self.engine = engine
        get_initializer(self.embeddings_initializer, "embeddings_initializer")(
            engine.weight.data, session_rng())
        self.embeddings = engine.weight            # one Param, two names: no copy, no sync
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def forward(self, x):
        self.build()
        ids = np.asarray(x)
        if ids.dtype.kind == "f":                  # Keras casts float ids to int
            if not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids)):
                raise TypeError(f"{self.name}: expected integer token ids, got {ids.dtype} "
                                f"values that are not whole numbers")
            ids = ids.astype(np.int64)
        return self.engine(ids)

    def backward(self, grad_out):
        return self.engine.backward(grad_out)

    def get_config(self) -> dict:
        return dict(super().get_config(), input_dim=self.input_dim, output_dim=self.output_dim,
                    mask_zero=self.mask_zero, input_length=self.input_length)


@register
class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` on the last axis: Keras' ``Dense``, over
    :class:`elman.Dense`. ``kernel`` (in_features, units), ``bias`` (units,) in Keras' layout;
    glorot-uniform kernel and zero bias, as in Keras. Any leading axes: (N, F) -> (N, units),
    (N, T, F) -> (N, T, units). ``activation``: None/"linear", "relu", "sigmoid", "tanh",
    "softmax"."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", name=None, dtype=None, input_shape=None):
        super().__init__(name, dtype, input_shape)
        self.units = _validate.positive_int("units", units)
        self.activation = _layers._activation_name(activation)
        self.use_bias = _validate.flag("use_bias", use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        get_initializer(kernel_initializer, "kernel_initializer")
        get_initializer(bias_initializer, "bias_initializer")

    def build(self, input_shape) -> None:
        features = input_shape[-1] if len(input_shape) else None
        if features is None:
            raise ValueError(f"{self.name}: the last axis of the input must be known to build "
                             f"a Dense layer, got input shape {tuple(input_shape)}")
        self.engine = _layers.Dense(features, self.units, bias=self.use_bias,
                                    activation=self.activation, dtype=self.dtype, seed=0)
        self._add_weight("kernel", (features, self.units), self.kernel_initializer)
        if self.use_bias:
            self._add_weight("bias", (self.units,), self.bias_initializer)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x):
        self._require_built(x)
        self.engine.weight.data[...] = self.kernel.data.T
        if self.use_bias:
            self.engine.bias.data[...] = self.bias.data
        return self.engine(x)

    def backward(self, grad_out):
        self.engine.zero_grad()
        dx = self.engine.backward(grad_out)
        self.kernel.grad += self.engine.weight.grad.T
        if self.use_bias:
            self.bias.grad += self.engine.bias.grad
        return dx

    def get_config(self) -> dict:
        return dict(super().get_config(), units=self.units, activation=self.activation,
                    use_bias=self.use_bias)


_ACTIVATIONS = {"tanh": _layers.Tanh, "sigmoid": _layers.Sigmoid, "relu": _layers.ReLU,
                "softmax": _layers.Softmax, "log_softmax": _layers.LogSoftmax}


@register
class Activation(Layer):
    """Keras' ``Activation(activation)``: "linear", "tanh", "sigmoid", "relu", "softmax" (over the
    last axis) or "log_softmax", element-wise, over elman's activation layers."""

    def __init__(self, activation, name=None, dtype=None, input_shape=None):
        super().__init__(name, dtype, input_shape)
        self.activation = _layers._activation_name(activation)
        cls = _ACTIVATIONS.get(self.activation)
        self.engine = None if cls is None else cls()
        self.built = True

    def forward(self, x):
        return np.asarray(x) if self.engine is None else self.engine(x)

    def backward(self, grad_out):
        return np.asarray(grad_out) if self.engine is None else self.engine.backward(grad_out)

    def get_config(self) -> dict:
        return dict(super().get_config(), activation=self.activation)


@register
class Dropout(Layer):
    """Keras' ``Dropout(rate)``, over :class:`elman.Dropout`: in training (``fit``) each element
    is zeroed with probability ``rate`` and the rest scaled by ``1/(1-rate)``; elsewhere the
    identity. ``noise_shape`` is not supported (refused)."""

    def __init__(self, rate, noise_shape=None, seed=None, name=None, dtype=None,
                 input_shape=None):
        super().__init__(name, dtype, input_shape)
        self.rate = _validate.probability("rate", rate)
        if noise_shape is not None:
            raise ValueError(f"Dropout: noise_shape is not supported (elman drops elements "
                             f"independently), got noise_shape={noise_shape!r}; use None")
        self.engine = _layers.Dropout(self.rate, seed=draw_seed() if seed is None else seed)
        self.built = True

    def forward(self, x):
        self.engine.train(self.training)
        return self.engine(x)

    def backward(self, grad_out):
        return self.engine.backward(grad_out)

    def get_config(self) -> dict:
        return dict(super().get_config(), rate=self.rate)


@register
class Masking(Layer):
    """Keras' ``Masking(mask_value)``: a time step whose features all equal ``mask_value`` is
    padding. Its values are zeroed here, and the model gives the recurrent layers each
    sequence's real length, so padding is skipped (any placement: pre-padding too). It must be
    the model's first layer (after ``Input``)."""

    def __init__(self, mask_value=0.0, name=None, dtype=None, input_shape=None):
        super().__init__(name, dtype, input_shape)
        if isinstance(mask_value, bool) or not isinstance(mask_value, numbers.Real) \
                or not np.isfinite(mask_value):
            raise ValueError(f"Masking: mask_value must be a finite number, got {mask_value!r}")
        self.mask_value = float(mask_value)
        self.built = True
        self._cache = None

    def forward(self, x):
        x = _validate.float_array("input", x, self.dtype)
        keep = np.any(x != self.mask_value, axis=-1, keepdims=True).astype(self.dtype)
        self._save_for_backward(keep)
        return x * keep

    def backward(self, grad_out):
        return np.asarray(grad_out) * _layers._saved(self)

    def get_config(self) -> dict:
        return dict(super().get_config(), mask_value=self.mask_value)


@register
class TimeDistributed(Layer):
    """Apply ``layer`` to every time step: (N, T, ...) -> (N, T, ...), Keras'
    ``TimeDistributed``. Its weights are the wrapped layer's."""

    def __init__(self, layer, name=None, input_shape=None):
        layer = from_spec(layer)
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed wraps an elman.keras layer, got "
                            f"{type(layer).__name__}")
        super().__init__(name, layer.dtype, input_shape)
        self.layer = layer
        self.built = layer.built
        self._cache = None

    def build(self, input_shape) -> None:
        if len(input_shape) < 3:
            raise ValueError(f"{self.name}: TimeDistributed needs sequences (N, T, ...), got "
                             f"input shape {tuple(input_shape)}")
        if not self.layer.built:
            self.layer.build((None,) + tuple(input_shape[2:]))
        self.built = True

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(inner[1:])

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim < 3:
            raise ValueError(f"{self.name}: TimeDistributed needs sequences (N, T, ...), got "
                             f"input of shape {x.shape}")
        self._require_built(x)
        n, t = x.shape[:2]
        y = self.layer.forward(x.reshape((n * t,) + x.shape[2:]))
        self._save_for_backward(x.shape)
        return y.reshape((n, t) + y.shape[1:])

    def get_config(self) -> dict:
        return {"layer": self.layer.spec(), "name": self.name}

    def backward(self, grad_out):
        shape = _layers._saved(self)
        g = np.asarray(grad_out)
        dx = self.layer.backward(g.reshape((shape[0] * shape[1],) + g.shape[2:]))
        return None if dx is None else dx.reshape(shape)
