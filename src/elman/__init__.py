"""elman: recurrent neural networks in NumPy with hand-written backpropagation through time."""
from ._version import __version__  # noqa: F401
from .module import Module, Param
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .frozen import freeze
from .gradcheck import gradcheck
from .cells import GRUCell, LSTMCell, RNNCell
from .recurrent import GRU, LSTM, RNN
from .minimal import MinGRU, MinLSTM
from .layers import (Dense, Dropout, Embedding, Last, LastBidirectional, LayerNorm, Linear,
                     LogSoftmax, MeanPool, ReLU, Sigmoid, Softmax, Tanh)
from .losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, Loss,
                     MSELoss, get_loss)
from .optim import (SGD, Adagrad, Adam, AdamW, CosineAnnealingLR, LinearLR, Optimizer,
                    ReduceLROnPlateau, RMSprop, StepLR, clip_grad_norm_, clip_grad_value_,
                    get_optimizer)

from .model import Sequential
from .gradient_flow import gradient_flow
from .attention import Attention
from .seq2seq import Bridge, Seq2Seq
from .beam import beam_search, greedy_decode
from .callbacks import (Callback, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                        ModelCheckpoint, TensorBoard, TimeBudget)
from .checkpoint import Checkpoint, CheckpointError, load, load_checkpoint, save
from .interop import ConversionError, export_onnx, from_keras, from_torch, to_onnx, to_torch
from . import data, distributed, fast, registry, threads
from .threads import get_num_threads, set_num_threads

__all__ = ["Module", "Param", "freeze", "no_grad", "enable_grad", "set_grad_enabled",
           "inference_mode",
           "is_grad_enabled", "gradcheck", "RNNCell", "GRUCell", "LSTMCell", "RNN", "GRU",
           "LSTM", "MinGRU", "MinLSTM", "Linear", "Dense", "Embedding", "Dropout", "LayerNorm", "Tanh", "Sigmoid",
           "ReLU", "Softmax", "LogSoftmax", "Last", "LastBidirectional", "MeanPool",
           "Loss", "MSELoss", "L1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss",
           "CrossEntropyLoss", "get_loss", "Optimizer", "SGD", "RMSprop", "Adagrad", "Adam",
           "AdamW", "get_optimizer", "clip_grad_norm_", "clip_grad_value_", "StepLR",
           "CosineAnnealingLR", "LinearLR", "ReduceLROnPlateau", "Sequential", "Callback",
           "History", "EarlyStopping", "ModelCheckpoint", "CSVLogger", "LearningRateScheduler",
           "TensorBoard", "TimeBudget", "save", "load", "load_checkpoint", "Checkpoint",
           "CheckpointError",
           "data", "distributed", "fast", "threads", "set_num_threads", "get_num_threads",
           "from_torch", "to_torch", "from_keras", "export_onnx", "to_onnx", "ConversionError",
           "registry", "gradient_flow", "Attention", "Bridge", "Seq2Seq", "beam_search",
           "greedy_decode"]
