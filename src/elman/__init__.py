"""elman: recurrent neural networks in NumPy with hand-written backpropagation through time."""
from .module import Module, Param
from .gradcheck import gradcheck
from .cells import GRUCell, LSTMCell, RNNCell
from .recurrent import GRU, LSTM, RNN
from .layers import (Dense, Dropout, Embedding, Last, LastBidirectional, LayerNorm, Linear,
                     LogSoftmax, MeanPool, ReLU, Sigmoid, Softmax, Tanh)

__version__ = "0.1.0"

__all__ = ["Module", "Param", "gradcheck", "RNNCell", "GRUCell", "LSTMCell", "RNN", "GRU",
           "LSTM", "Linear", "Dense", "Embedding", "Dropout", "LayerNorm", "Tanh", "Sigmoid",
           "ReLU", "Softmax", "LogSoftmax", "Last", "LastBidirectional", "MeanPool"]
