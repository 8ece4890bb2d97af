"""elman: recurrent neural networks in NumPy with hand-written backpropagation through time."""
from .module import Module, Param
from .gradcheck import gradcheck
from .cells import GRUCell, LSTMCell, RNNCell
from .recurrent import GRU, LSTM, RNN

__version__ = "0.1.0"
