"""``elman.keras.models.Sequential``: Keras' ``Sequential`` over :class:`elman.Sequential`.

What it adds to elman's model (whose ``fit``/``evaluate``/``predict`` loop, callbacks and
History it reuses as they are):

- layers are built when their input size becomes known: at once after an ``Input(shape=...)``
  or an ``Embedding`` (whose input is token ids), else on the first data the model sees; a
  ``compile`` before that is carried out then;
- Keras' signatures (``fit(x, y, batch_size, epochs, ...)``), names (``summary()`` shows
  ``simple_rnn (SimpleRNN)``, ``(None, None, 32)``, ``2080``) and ``history.history`` keys
  (``loss``, ``acc``, ``val_loss``, ``val_acc``: the metrics as named in ``compile``);
- masks: with ``Embedding(mask_zero=True)`` or ``Masking(mask_value)`` first, each sample's
  padding steps (any placement, pre-padding included) are skipped by the recurrent layers, as
  Keras' masks make them; see :class:`elman.Sequential` for how (``mask_value``).
"""
from __future__ import annotations

import numpy as np

from .. import checkpoint as _checkpoint
from .. import losses as _losses
from .. import metrics as _metrics
from .. import model as _model
from . import losses as _face_losses
from ._base import LAYERS, Layer, draw_seed, unique_name
from ._core import Embedding, InputLayer, Masking
from .optimizers import KerasOptimizer

__all__ = ["Sequential", "load_model"]


def _verbose(value) -> int:
    if value == "auto":
        return 1
    if value not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {value!r}")
    return int(value)


class Sequential(_model.Sequential):
    """A stack of ``elman.keras`` layers, used as in Keras.

    >>> import numpy as np
    >>> from elman.keras import layers, utils
    >>> utils.clear_session()
    >>> model = Sequential()
    >>> model.add(layers.Embedding(10000, 32))
    >>> model.add(layers.SimpleRNN(32))
    >>> model.add(layers.Dense(1, activation="sigmoid"))
    >>> [(layer.name, layer.count_params()) for layer in model.layers]
    [('embedding', 320000), ('simple_rnn', 2080), ('dense', 33)]
    >>> model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    >>> x = np.random.default_rng(0).integers(1, 10000, size=(40, 12))    # (N, T) token ids
    >>> y = (x[:, -1] > 5000).astype(np.float32)
    >>> history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    >>> sorted(history.history)
    ['acc', 'loss', 'val_acc', 'val_loss']
    """

    def __init__(self, layers=None, name=None, batch_input_shape=None):
        super().__init__(None, seed=draw_seed())
        self.name = unique_name("sequential") if name is None else name
        # (None, T, F)-like; set by Input(...), a first layer's input_shape=, or a saved model
        self._batch_input_shape = None if batch_input_shape is None else tuple(batch_input_shape)
        self._shapes = None                 # each layer's output shape, once known
        self._pending_compile = None
        self._keras_compile = None          # compile()'s arguments, as given
        self.eval()                         # as Keras: no dropout outside fit()
        if layers is not None:
            if isinstance(layers, (Layer, InputLayer)):
                layers = [layers]
            for layer in layers:
                self.add(layer)

    # -- structure -------------------------------------------------------------------------
    def add(self, layer) -> None:
        """Append a layer (or an ``Input`` first)."""
        if isinstance(layer, InputLayer):
            if len(self):
                raise ValueError("Sequential.add: an Input must come before every layer")
            self._batch_input_shape = layer.shape
            self._build()
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected an elman.keras layer (e.g. "
                            f"elman.keras.layers.Dense), got {type(layer).__name__}")
        if getattr(layer, "return_state", False) or getattr(layer, "merge_mode", "") is None:
            raise ValueError(f"Sequential.add: layer {layer.name!r} returns several arrays "
                             f"(return_state=True or merge_mode=None), but a Sequential model "
                             f"passes one array from layer to layer (as in Keras); call the "
                             f"layer directly instead")
        masks = isinstance(layer, Masking) or (isinstance(layer, Embedding) and layer.mask_zero)
        if masks and len(self):
            raise ValueError(f"Sequential.add: {layer.name!r} masks padding, which elman does "
                             f"by the model's input values: it must be the first layer, got it "
                             f"at position {len(self)}")
        if not len(self) and layer._batch_input_shape is not None \
                and self._batch_input_shape is None:
            self._batch_input_shape = layer._batch_input_shape
        layer.train(self.training)
        super().add(layer)
        if self.optimizer is not None and self._keras_compile is not None:
            # its weights must be trained too: compile again once they exist (as Keras would)
            self.optimizer, self._pending_compile = None, self._keras_compile
        self._build()

    def get_layer(self, name=None, index=None):
        """A layer by its name or its position (Keras' ``get_layer``)."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; the layers are "
                         f"{[layer.name for layer in self.layers]}")

    def _sequence_effects(self) -> list:
        return [getattr(layer, "_sequence_effect", None) for layer in self.layers]

    @property
    def built(self) -> bool:
        return bool(len(self)) and all(layer.built for layer in self.layers)

    def _build(self) -> None:
        """Build every layer whose input shape is now known; then a pending compile."""
        shape = self._batch_input_shape
        if shape is None and len(self) and hasattr(self.layers[0], "default_input_shape"):
            shape = self.layers[0].default_input_shape()
        if shape is None:
            return
        shapes = []
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
            shapes.append(tuple(shape))
        self._shapes = shapes
        if self._pending_compile is not None and self.built:
            args, self._pending_compile = self._pending_compile, None
            self._compile_now(**args)

    def build(self, input_shape=None) -> None:
        """Build with a batch input shape such as ``(None, None, 8)`` (Keras' ``build``)."""
        if input_shape is not None:
            self._batch_input_shape = tuple(input_shape)
        self._build()
        if not self.built:
            raise ValueError("Sequential.build: the input shape is unknown; pass it, e.g. "
                             "build((None, None, 8)), or start the model with Input(shape=...)")

    def _ensure_built(self, x) -> None:
        if self.built:
            return
        if not len(self):
            raise ValueError("the model has no layers: add some with model.add(...)")
        if self._batch_input_shape is None:
            shape = np.shape(x)
            # the time axis stays unknown: the model takes sequences of any length
            self._batch_input_shape = (None,) + ((None,) + shape[2:] if len(shape) >= 3
                                                 else tuple(shape[1:]))
        self._build()

    def _mask_value(self):
        """The padding value the first layer masks by (None: no mask)."""
        if not len(self) or not self._has_sequence_layers:
            return None
        first = self.layers[0]
        if isinstance(first, Embedding) and first.mask_zero:
            return 0
        if isinstance(first, Masking):
            return first.mask_value
        return None

    # -- compile / fit / evaluate / predict ------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **clip):
        """Keras' ``compile``: ``optimizer`` a name ("rmsprop", "adam", "sgd", ...) or an
        ``elman.keras.optimizers`` object, ``loss`` a name ("binary_crossentropy", "mse",
        "sparse_categorical_crossentropy", ... with Keras' meaning: the categorical ones take
        probabilities, see :mod:`elman.keras.losses`) or a loss object, ``metrics`` names
        (``"acc"``/``"accuracy"``, "mae", ...; each is logged under the name given). Takes
        effect once the model is built (at once if it is)."""
        if loss is None:
            raise ValueError(f"compile: a loss is required, e.g. loss='mse'; known names: "
                             f"{sorted(_losses.LOSSES)}")
        if isinstance(loss, str):
            _losses.get_loss(_face_losses.get(loss))      # an unknown name fails now
        args = dict(optimizer=optimizer, loss=loss, metrics=metrics, **clip)
        self._keras_compile = args
        if self.built:
            self._compile_now(**args)
        else:
            self._pending_compile = args

    def _compile_now(self, optimizer, loss, metrics=None, **clip) -> None:
        if isinstance(optimizer, KerasOptimizer):
            optimizer = optimizer.build(self.parameters())
        super().compile(optimizer, _face_losses.get(loss), metrics, **clip)
        if isinstance(self.loss, _face_losses.CategoricalCrossentropy):   # one-hot targets
            self.metrics = [_face_losses.CategoricalAccuracy(m.name)
                            if type(m) is _metrics.Accuracy else m for m in self.metrics]

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0):
        """Keras' ``fit``; returns the History (``history.history["loss"]``, ...)."""
        if class_weight is not None or sample_weight is not None:
            raise ValueError("fit: class_weight and sample_weight are not supported; got "
                             f"class_weight={class_weight!r}, sample_weight="
                             f"{'an array' if sample_weight is not None else None}")
        self._ensure_built(x)
        history = super().fit(x, y, epochs=epochs, batch_size=batch_size or 32,
                              validation_split=validation_split,
                              validation_data=validation_data, shuffle=shuffle,
                              callbacks=callbacks, verbose=_verbose(verbose),
                              initial_epoch=initial_epoch, mask_value=self._mask_value())
        history.history.pop("lr", None)        # Keras logs no learning rate
        return history

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """Keras' ``evaluate``: the loss, or ``[loss, metric, ...]`` with metrics."""
        self._ensure_built(x)
        return super().evaluate(x, y, batch_size=batch_size or 32,
                                mask_value=self._mask_value(), verbose=_verbose(verbose),
                                return_dict=return_dict)

    def predict(self, x, batch_size=None, verbose="auto"):
        """Keras' ``predict``: the outputs for ``x``, samples first, no dropout."""
        self._ensure_built(x)
        return super().predict(x, batch_size=batch_size or 32, mask_value=self._mask_value(),
                               verbose=0 if verbose == "auto" else _verbose(verbose))

    def __call__(self, x, training=False):
        """``model(x)``: the outputs for one batch (dropout only with ``training=True``)."""
        self._ensure_built(x)
        was_training = self.training
        self.train(bool(training))
        try:
            x, _, lengths, order = self._prepare(x, None, None, self._mask_value())
            out = np.array(self.forward(x, lengths=lengths))
        finally:
            self.train(was_training)
        if order is not None and self._output_is_sequence():
            out = _model._restore_order(out, order)
        return out

    # -- saving ---------------------------------------------------------------------------
    def config(self) -> dict:
        """The architecture as plain data (what :func:`elman.save` stores)."""
        shape = self._batch_input_shape
        return {"layers": [layer.spec() for layer in self.layers], "name": self.name,
                "batch_input_shape": None if shape is None else list(shape)}

    def save(self, filepath) -> None:
        """Write the model -- architecture, weights, optimizer state, epoch -- to one ``.npz``
        file of arrays and JSON (:func:`elman.save`; never pickle). Read it back with
        :func:`load_model`."""
        _checkpoint.save(self, filepath)

    def reset_states(self) -> None:
        """Zero the carried states of every stateful layer."""
        for layer in self.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    def count_params(self) -> int:
        return sum(p.data.size for p in self.parameters())

    def set_weights(self, weights) -> None:
        if not self.built:
            raise ValueError("set_weights: the model is not built yet, so it has no weights; "
                             "start it with Input(shape=...) or call build(input_shape)")
        super().set_weights(weights)

    # -- summary ---------------------------------------------------------------------------
    def summary(self, line_length=None, print_fn=None):
        """Keras' table: each layer's name and type, output shape and parameter count, then
        the totals. ``print_fn`` is called with each line (default ``print``)."""
        rows = []
        for k, layer in enumerate(self.layers):
            shape = "?" if self._shapes is None or not layer.built else str(self._shapes[k])
            count = str(layer.count_params()) if layer.built else "0 (unbuilt)"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, count))
        w1 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 4
        w2 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 4
        w3 = max([len("Param #")] + [len(r[2]) for r in rows]) + 2
        width = max(w1 + w2 + w3, line_length or 0)
        total = self.count_params()
        lines = [f'Model: "{self.name}"', "_" * width,
                 f" {'Layer (type)':<{w1 - 1}}{'Output Shape':<{w2}}{'Param #':<{w3}}",
                 "=" * width]
        for k, (a, b, c) in enumerate(rows):
            lines.append(f" {a:<{w1 - 1}}{b:<{w2}}{c:<{w3}}")
            lines.append("" if k < len(rows) - 1 else "=" * width)
        if not rows:
            lines.append("=" * width)
        lines += [f"Total params: {total:,}", f"Trainable params: {total:,}",
                  "Non-trainable params: 0", "_" * width]
        emit = print if print_fn is None else print_fn
        for line in lines:
            emit(line)


def load_model(filepath) -> Sequential:
    """A model written by :meth:`Sequential.save` (or by :func:`elman.save`, or a
    ``ModelCheckpoint``), compiled again with its optimizer state, ready to predict or to
    continue training (``fit(..., initial_epoch=model.epoch)``)."""
    classes = {**LAYERS, "Sequential": Sequential,
               **{cls.__name__: cls for cls in _face_losses.LOSSES.values()}}
    model = _checkpoint.load(filepath, custom_objects=classes)
    if not isinstance(model, Sequential):
        raise TypeError(f"load_model: {filepath} holds a {type(model).__name__}, not an "
                        f"elman.keras Sequential; read it with elman.load")
    return model
