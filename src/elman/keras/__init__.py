"""``elman.keras``: Keras' way of writing models, computed by elman's layers.

Seed 001's Keras code runs with only its imports changed::

    from elman.keras.models import Sequential
    from elman.keras.layers import Embedding, SimpleRNN, Dense

    model = Sequential()
    model.add(Embedding(10000, 32))
    model.add(SimpleRNN(32))
    model.add(Dense(1, activation="sigmoid"))
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    history = model.fit(input_train, y_train, epochs=10, batch_size=128, validation_split=0.2)

This is a face, not a second implementation: every layer keeps Keras' weights in Keras' layout
(``get_weights()`` goes straight into a real Keras model's ``set_weights``) and hands the
computing to the elman layer it holds (``layer.engine``: ``elman.RNN``, ``GRU``, ``LSTM``,
``Embedding``, ``Dense``, ``Dropout``), so the exact backpropagation through time and the
compiled fast path are the same. ``Sequential`` is an :class:`elman.Sequential` and trains
with its ``fit`` loop and callbacks.

Modules: :mod:`~elman.keras.layers`, :mod:`~elman.keras.models`, :mod:`~elman.keras.losses`,
:mod:`~elman.keras.optimizers`, :mod:`~elman.keras.callbacks`, :mod:`~elman.keras.datasets`
(``imdb``), :mod:`~elman.keras.utils` (``pad_sequences``, ``set_random_seed``),
``preprocessing.sequence`` (Keras 2's home of ``pad_sequences``) and ``backend``
(``clear_session``).
"""
from . import (backend, callbacks, datasets, layers, losses, models, optimizers, preprocessing,
               utils)
from .layers import Input
from .models import Sequential

__all__ = ["Sequential", "Input", "layers", "models", "losses", "optimizers", "callbacks",
           "datasets", "utils", "preprocessing", "backend"]
