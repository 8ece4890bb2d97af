"""The cells: each file holds one cell's step equations (forward and backward side by side) and
its single-step module (the LSTM's, which chooses between the plain and the peephole equations,
in ``lstm_cell``). The time loop that runs them over sequences is ``elman.timeloop``."""
from .rnn import RNNCell, RNNEquations
from .gru import GRUCell, GRUEquations
from .lstm import LSTMEquations
from .peephole_lstm import PeepholeLSTMEquations
from .lstm_cell import LSTMCell

__all__ = ["RNNCell", "GRUCell", "LSTMCell", "RNNEquations", "GRUEquations", "LSTMEquations",
           "PeepholeLSTMEquations"]
