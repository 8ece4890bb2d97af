"""``elman.keras.layers``: the layers of the Keras face (``from elman.keras.layers import
Embedding, SimpleRNN, Dense``)."""
from ._base import Layer
from ._core import (Activation, Dense, Dropout, Embedding, Input, InputLayer, Masking,
                    TimeDistributed)
from ._recurrent import GRU, LSTM, Bidirectional, SimpleRNN

__all__ = ["Layer", "Input", "InputLayer", "Embedding", "Dense", "Activation", "Dropout",
           "Masking", "TimeDistributed", "SimpleRNN", "GRU", "LSTM", "Bidirectional"]
