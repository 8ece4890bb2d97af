"""Converters between elman and other frameworks. Their dependencies are optional and imported
only when a converter is called, so ``import elman`` never needs them.

- :mod:`elman.interop.torch`: :func:`~elman.interop.torch.from_torch` builds the elman twin of a
  ``torch.nn`` module (same configuration, same weights bit for bit);
  :func:`~elman.interop.torch.to_torch` goes back.
- :mod:`elman.interop.keras`: :func:`~elman.interop.keras.from_keras` reads a Keras 3
  ``Sequential`` (live, or a ``.keras`` file read with h5py and without Keras) into an
  :class:`~elman.Sequential`, gate orders and bias layouts converted.
- :mod:`elman.interop.onnx`: :func:`~elman.interop.onnx.export_onnx` writes a recurrent layer or a
  :class:`~elman.Sequential` as an ONNX graph of the standard ``RNN``/``GRU``/``LSTM`` operators;
  :mod:`elman.interop.onnx_seq2seq`: an :class:`~elman.Seq2Seq` as an encoder graph and a
  decoder-step graph.

Every converter refuses what it cannot express exactly with a :class:`ConversionError` naming the
layer, rather than producing a model that computes something else.
"""
from __future__ import annotations

__all__ = ["ConversionError", "from_torch", "to_torch", "from_keras", "export_onnx", "to_onnx",
           "export_seq2seq_onnx", "seq2seq_to_onnx"]

from .errors import ConversionError
from .keras import from_keras  # (no keras or h5py import happens here)
from .onnx import export_onnx, to_onnx  # (nor an onnx import)
from .onnx_seq2seq import export_seq2seq_onnx, seq2seq_to_onnx
from .torch import from_torch, to_torch  # (nor a torch import)
