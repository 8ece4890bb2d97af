"""The cells: each file holds one cell's step equations (forward and backward side by side) and
its single-step module. The time loop that runs them over sequences is ``elman.timeloop``."""
from .rnn import RNNCell, RNNEquations
from .gru import GRUCell, GRUEquations
from .lstm import LSTMCell, LSTMEquations
from .peephole_lstm import PeepholeLSTMEquations

__all__ = ["RNNCell", "GRUCell", "LSTMCell", "RNNEquations", "GRUEquations", "LSTMEquations",
           "PeepholeLSTMEquations"]
