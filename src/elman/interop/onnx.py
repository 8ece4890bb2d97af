"""Export to ONNX: a recurrent layer or a :class:`~elman.Sequential` as a graph of standard
operators, for onnxruntime and any other ONNX runtime.

:func:`export_onnx` writes the file, :func:`to_onnx` returns the ``onnx.ModelProto``. The graph is
the model in evaluation mode (dropout is the identity and is left out). ``onnx`` is imported only
when they are called; ``onnxruntime`` only to choose the default opset.

Operators
---------
- ``RNN``/``GRU``/``LSTM`` layers become one ONNX ``RNN``/``GRU``/``LSTM`` node per layer (both
  directions in one node, ``direction="bidirectional"``), chained as PyTorch stacks them: ONNX's
  output ``Y`` (T, D, N, H) is transposed and reshaped to (T, N, D*H) for the next layer. Weights
  are reordered from PyTorch's gate rows to ONNX's: LSTM ``[i|f|g|o]`` -> ``[i|o|f|c]``, GRU
  ``[r|z|n]`` -> ``[z|r|h]`` with ``linear_before_reset=1`` (PyTorch's GRU applies the reset
  gate after ``W_hn h + b_hn``); biases are stored as ONNX wants them, ``B = [W_b | R_b]``. An
  RNN with ``nonlinearity="relu"`` gets ``activations=["Relu"]``. An LSTM with
  ``peephole=True`` writes its peephole weights into the operator's ``P`` input,
  ``[w_ci | w_co | w_cf]`` per direction (ONNX's ``P[iof]``).
- ``MinGRU``/``MinLSTM`` (as a model of their own, not yet inside a Sequential): their equations
  in element-wise operators and one ``Scan`` per layer-direction (:mod:`.onnx_minimal`).
- ``Embedding`` -> ``Gather``; ``Linear``/``Dense`` -> ``MatMul`` + ``Add`` (+ the activation:
  ``Tanh``, ``Sigmoid``, ``Relu``, ``Softmax``, ``LogSoftmax``); ``LayerNorm`` ->
  ``LayerNormalization`` (opset 17+); ``Dropout`` -> nothing.
- ``Last`` -> ``Gather`` (``GatherND`` with lengths), ``LastBidirectional`` -> those + ``Slice`` +
  ``Concat``, ``MeanPool`` -> ``ReduceSum`` / lengths (masked with lengths).

Graph inputs and outputs (``batch`` and ``time`` are dynamic axes)
------------------------------------------------------------------
A recurrent layer::

    input    (time, batch, I), or (batch, time, I) for a batch_first layer
    h0       (D*num_layers, batch, H)    only with initial_states=True (else zeros)
    c0       (D*num_layers, batch, H)    LSTM, only with initial_states=True
    lengths  (batch,) int64              only with lengths=True
    ->
    output   shaped as the layer's output: (time, batch, D*H) or (batch, time, D*H)
    h_n      (D*num_layers, batch, H)
    c_n      (D*num_layers, batch, H)    LSTM

A Sequential (samples first, as ``model(x)`` and ``model.predict``)::

    input    (batch, time) int64 token ids when the first layer is an Embedding, else
             (batch, time, F) sequences, or (batch, F) for a model without sequence layers
    lengths  (batch,) int64              only with lengths=True
    ->
    output   the model's prediction, samples first

``lengths`` feed the ONNX operators' ``sequence_lens`` (cast to int32): outputs past a sequence's
length are zero and ``h_n`` holds the state at its last valid step, exactly elman's meaning of
``lengths`` (and PyTorch's packed sequences). Other layers than the ones above, ``LSTM`` with
``proj_size`` (ONNX's LSTM has no projection), and unbatched inputs have no ONNX form here: they
raise :class:`~elman.interop.ConversionError` naming the layer.

Dtypes: the graph computes in the model's dtype, unless ``dtype=`` says otherwise. onnxruntime's
RNN/GRU/LSTM kernels run float32 only: export a float64 model with ``dtype=np.float32`` to run it
there (a valid float64 graph is written otherwise, for runtimes that have double kernels).

The command line: ``elman export-onnx CHECKPOINT OUT.onnx [--opset N] [--lengths]
[--initial-states] [--dtype float32] [--verify]`` (see :func:`add_arguments`, :func:`run`).
"""
from __future__ import annotations

import argparse
import functools
import os
import tempfile

import numpy as np

from .. import _validate
from .._version import __version__
from ..checkpoint import load
from .._validate import CommandError
from ..layers import (Dropout, Embedding, Last, LastBidirectional, LayerNorm, Linear, LogSoftmax,
                      MeanPool, ReLU, Sigmoid, Softmax, Tanh)
from ..model import Sequential
from ..module import Module
from ..minimal import MinimalLayer
from ..recurrent import GRU, LSTM, RNN, RecurrentLayer
from .errors import ConversionError
from .onnx_minimal import minimal_layer

__all__ = ["export_onnx", "to_onnx", "default_opset", "MIN_OPSET", "HELP", "add_arguments",
           "run", "export_onnx_main"]

#: The lowest opset written: Squeeze/Unsqueeze/ReduceSum take their axes as inputs from 13, and
#: 14 is the first with today's RNN/GRU/LSTM definitions.
MIN_OPSET = 14
#: The default opset when onnxruntime is not installed (supported by onnxruntime >= 1.18).
FALLBACK_OPSET = 21

_SEQUENCE_LAYERS = "RNN, GRU, LSTM, Last, LastBidirectional, MeanPool"
_SUPPORTED = ("elman.RNN, elman.GRU, elman.LSTM (without proj_size), and elman.Sequential of "
              "those with Embedding, Linear/Dense, Dropout, LayerNorm, Tanh, Sigmoid, ReLU, "
              "Softmax, LogSoftmax, Last, LastBidirectional, MeanPool and nested Sequentials")


def _onnx():
    try:
        import onnx
    except ImportError as e:                              # pragma: no cover - needs no onnx
        raise ImportError("elman.interop.onnx needs the onnx package, which is not installed: "
                          "pip install onnx (and onnxruntime to run the graph)") from e
    return onnx


@functools.lru_cache(maxsize=None)
def default_opset() -> int:
    """The highest opset both the installed ``onnx`` and ``onnxruntime`` support (at least
    :data:`MIN_OPSET`); without onnxruntime ``min(FALLBACK_OPSET, onnx's highest)``."""
    onnx = _onnx()
    from onnx import TensorProto, helper
    highest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime as ort
    except ImportError:
        return max(MIN_OPSET, min(FALLBACK_OPSET, highest))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    options = ort.SessionOptions()
    options.log_severity_level = 4                        # the refusals below are expected
    for opset in range(highest, MIN_OPSET, -1):
        model = _make_model(helper, graph, opset)
        try:
            ort.InferenceSession(model.SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
        except Exception:                                 # this runtime does not know the opset
            continue
        return opset
    return MIN_OPSET


def _make_model(helper, graph, opset: int):
    ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=ids, producer_name="elman")
    try:
        # the lowest IR version that carries this opset, so older runtimes load the file too
        model.ir_version = helper.find_min_ir_version_for(ids)
    except Exception:                                     # pragma: no cover - older onnx
        pass
    return model


# -- the graph under construction -------------------------------------------------------------

class _Graph:
    """Nodes, initializers and unique names; ``op`` appends a node and returns its output(s)."""

    def __init__(self, onnx, dtype: np.dtype, opset: int):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.tensor_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.dtype, self.opset = np.dtype(dtype), opset
        self.nodes, self.initializers, self._used = [], [], set()

    def name(self, base: str) -> str:
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def const(self, value, base: str, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.name(base)
        self.initializers.append(self.numpy_helper.from_array(arr.copy(order="C"), name))
        return name

    def weight(self, value, base: str) -> str:
        """A parameter, in the graph's dtype."""
        return self.const(np.asarray(value).astype(self.dtype), base)

    def ints(self, values, base: str = "axes") -> str:
        return self.const(np.array(values, dtype=np.int64), base)

    def op(self, op_type: str, inputs, base: str | None = None, outputs: int = 1, **attrs):
        while inputs and inputs[-1] == "":                # omitted trailing optional inputs
            inputs = inputs[:-1]
        outs = [self.name(f"{base or op_type.lower()}" + (f"_{i}" if outputs > 1 else ""))
                for i in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs,
                                                name=self.name(f"node_{outs[0]}"), **attrs))
        return outs[0] if outputs == 1 else outs


# -- recurrent layers -------------------------------------------------------------------------

# PyTorch's gate blocks in ONNX's order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
_GATE_ORDER = {"RNN": [0], "GRU": [1, 0, 2], "LSTM": [0, 3, 1, 2]}


def _kind(layer: RecurrentLayer) -> str:
    for cls in (LSTM, GRU, RNN):
        if isinstance(layer, cls):
            return cls.__name__
    raise ConversionError(f"{type(layer).__name__} is a recurrent layer with no ONNX operator")


def _check_recurrent(layer: RecurrentLayer, where: str) -> str:
    kind = _kind(layer)
    if type(layer) not in (RNN, GRU, LSTM):
        raise ConversionError(f"{where} is a {type(layer).__name__}, a subclass of elman.{kind}: "
                              f"its computation may differ from ONNX's {kind} operator")
    if layer.proj_size:
        raise ConversionError(
            f"{where} has proj_size={layer.proj_size}: ONNX's LSTM operator has "
            f"no output projection (weight_hr), so the layer cannot be written as one")
    if getattr(layer, "layer_norm", False):
        raise ConversionError(f"{where} has layer_norm=True: ONNX's {kind} operator has no "
                              f"normalisation inside its recurrence")
    if getattr(layer, "zoneout", 0.0):
        raise ConversionError(f"{where} has zoneout={layer.zoneout}: ONNX's {kind} operator "
                              f"cannot mix each step's state with the previous one (an "
                              f"evaluation-mode model computes p h_prev + (1 - p) h)")
    return kind


def _reorder(a: np.ndarray, kind: str, H: int) -> np.ndarray:
    blocks = a.reshape((len(_GATE_ORDER[kind]), H) + a.shape[1:])
    return blocks[_GATE_ORDER[kind]].reshape(a.shape)


def _recurrent(g: _Graph, layer: RecurrentLayer, kind: str, X: str, h0: str | None,
               c0: str | None, seq_lens: str | None, prefix: str):
    """Nodes for a layer on a time-major input X (T, N, I). Returns (Y (T, N, D*H), h_n, c_n)."""
    D, H, L = (2 if layer.bidirectional else 1), layer.hidden_size, layer.num_layers
    Y_hs, Y_cs = [], []
    for k in range(L):
        W, R, B = [], [], []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            W.append(_reorder(getattr(layer, "weight_ih" + sfx).data, kind, H))
            R.append(_reorder(getattr(layer, "weight_hh" + sfx).data, kind, H))
            if layer.bias:
                B.append(np.concatenate([_reorder(getattr(layer, "bias_ih" + sfx).data, kind, H),
                                         _reorder(getattr(layer, "bias_hh" + sfx).data, kind, H)]))
        name = f"{prefix}l{k}"
        inputs = [X, g.weight(np.stack(W), f"{name}_W"), g.weight(np.stack(R), f"{name}_R"),
                  g.weight(np.stack(B), f"{name}_B") if B else "", seq_lens or ""]
        for state in ([h0, c0] if kind == "LSTM" else [h0]):
            if state is None:
                inputs.append("")
            elif L == 1:
                inputs.append(state)
            else:                                         # this layer's rows of (L*D, N, H)
                inputs.append(g.op("Slice", [state, g.ints([k * D], "starts"),
                                             g.ints([(k + 1) * D], "ends"), g.ints([0])],
                                   f"{name}_{state}"))
        if getattr(layer, "peephole", False):           # P: [p_i, p_o, p_f] per direction
            P = [np.concatenate([getattr(layer, f"weight_c{gate}_l{k}" + sfx).data
                                 for gate in "iof"])
                 for sfx in ("", "_reverse")[:D]]
            inputs.append(g.weight(np.stack(P), f"{name}_P"))
        attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
        if kind == "GRU":                 # 1: reset after W_hn h (PyTorch); 0: the classic GRU
            attrs["linear_before_reset"] = 1 if layer.reset_after else 0
        if kind == "RNN":
            attrs["activations"] = ["Relu" if layer.nonlinearity == "relu" else "Tanh"] * D
        outs = g.op(kind, inputs, f"{name}_Y", outputs=3 if kind == "LSTM" else 2, **attrs)
        Y, Y_hs = outs[0], Y_hs + [outs[1]]
        if kind == "LSTM":
            Y_cs.append(outs[2])
        # ONNX's Y is (T, D, N, H); the next layer and the caller want (T, N, D*H)
        if D == 1:
            X = g.op("Squeeze", [Y, g.ints([1])], f"{name}_out")
        else:
            Yt = g.op("Transpose", [Y], f"{name}_Yt", perm=[0, 2, 1, 3])
            X = g.op("Reshape", [Yt, g.ints([0, 0, D * H], "shape")], f"{name}_out")

    def stack(parts, what):
        return parts[0] if len(parts) == 1 else g.op("Concat", parts, f"{prefix}{what}", axis=0)
    return X, stack(Y_hs, "h_n"), (stack(Y_cs, "c_n") if kind == "LSTM" else None)


# -- sequential models ------------------------------------------------------------------------

class _Flow:
    """The tensor between two layers, and its layout: ``phys_tm`` says whether axes (0, 1) are
    (time, batch) in the graph, ``log_tm`` whether they are in elman's Sequential at that point;
    a transpose is added only where a layer's result depends on the difference."""

    def __init__(self, name: str, dims: list, has_time: bool):
        self.name, self.dims, self.has_time = name, dims, has_time
        self.phys_tm = self.log_tm = False

    def physical(self, g: _Graph, time_major: bool) -> str:
        if self.has_time and self.phys_tm != time_major:
            perm = [1, 0] + list(range(2, len(self.dims)))
            self.name = g.op("Transpose", [self.name], "transposed", perm=perm)
            self.dims = [self.dims[1], self.dims[0]] + self.dims[2:]
            self.phys_tm = time_major
        return self.name


_ACTIVATION_OPS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "softmax": "Softmax",
                   "log_softmax": "LogSoftmax"}


def _activation(g: _Graph, flow: _Flow, name: str, dim: int, base: str) -> None:
    op = _ACTIVATION_OPS[name]
    attrs = {}
    if op in ("Softmax", "LogSoftmax"):
        if dim not in (-1, len(flow.dims) - 1):           # an axis whose meaning is the layout
            flow.physical(g, flow.log_tm)
        attrs["axis"] = dim
    flow.name = g.op(op, [flow.name], base, **attrs)


def _picker(g: _Graph, layer, flow: _Flow, lengths: str | None, base: str) -> None:
    """Last / LastBidirectional / MeanPool of a (T, N, F) or (N, T, F) sequence -> (N, F)."""
    F = flow.dims[2]
    if isinstance(layer, MeanPool):
        x = flow.physical(g, True)                        # (T, N, F)
        if lengths is None:
            s = g.op("ReduceSum", [x, g.ints([0])], f"{base}_sum", keepdims=0)
            T = g.op("Gather", [g.op("Shape", [x], f"{base}_shape"), g.ints(0, "zero")],
                     f"{base}_T", axis=0)
            count = g.op("Cast", [T], f"{base}_count", to=g.tensor_type)
        else:
            T = g.op("Gather", [g.op("Shape", [x], f"{base}_shape"), g.ints(0, "zero")],
                     f"{base}_T", axis=0)
            steps = g.op("Range", [g.ints(0, "zero"), T, g.ints(1, "one")], f"{base}_steps")
            valid = g.op("Less", [g.op("Unsqueeze", [steps, g.ints([1])], f"{base}_t"),
                                  g.op("Unsqueeze", [lengths, g.ints([0])], f"{base}_len")],
                         f"{base}_valid")                  # (T, N)
            mask = g.op("Unsqueeze", [g.op("Cast", [valid], f"{base}_mask2", to=g.tensor_type),
                                      g.ints([2])], f"{base}_mask")
            s = g.op("ReduceSum", [g.op("Mul", [x, mask], f"{base}_masked"), g.ints([0])],
                     f"{base}_sum", keepdims=0)
            count = g.op("Unsqueeze", [g.op("Cast", [lengths], f"{base}_lenf",
                                            to=g.tensor_type), g.ints([1])], f"{base}_count")
        flow.name = g.op("Div", [s, count], base)
    else:
        if lengths is None:
            x = flow.physical(g, True)                    # (T, N, F): the last step is T-1
            last = g.op("Gather", [x, g.ints(-1, "last")], f"{base}_last", axis=0)
            time_axis = 0
        else:
            x = flow.physical(g, False)                   # (N, T, F): one step per sample
            t = g.op("Sub", [lengths, g.ints(1, "one")], f"{base}_t")
            idx = g.op("Unsqueeze", [t, g.ints([1])], f"{base}_idx")
            last = g.op("GatherND", [x, idx], f"{base}_last", batch_dims=1)
            time_axis = 1
        if isinstance(layer, LastBidirectional):
            H = layer.hidden_size
            fwd = g.op("Slice", [last, g.ints([0], "starts"), g.ints([H], "ends"), g.ints([1])],
                       f"{base}_fwd")
            first = g.op("Gather", [x, g.ints(0, "zero")], f"{base}_first", axis=time_axis)
            rev = g.op("Slice", [first, g.ints([H], "starts"), g.ints([2 * H], "ends"),
                                 g.ints([1])], f"{base}_rev")
            flow.name = g.op("Concat", [fwd, rev], base, axis=1)
        else:
            flow.name = last
    flow.dims = [flow.dims[1] if flow.phys_tm else flow.dims[0], F]
    flow.has_time = False


def _sequential(g: _Graph, model: Sequential, flow: _Flow, lengths: dict, where: str) -> None:
    """Nodes for ``model`` on ``flow`` (samples first on entry and on exit), mirroring
    ``Sequential._forward``: the same layout at every layer, transposes only where needed."""
    flow.has_time = model._has_sequence_layers
    flow.phys_tm = flow.log_tm = False
    for i, (layer, kind) in enumerate(zip(model.layers, model._kinds)):
        lw = f"{where} layer {i} ({type(layer).__name__})"
        base = f"{where.replace(' ', '_')}_{i}".replace("model_", "")
        cls = type(layer)
        if kind == "recurrent":
            minimal = isinstance(layer, MinimalLayer)     # MinGRU/MinLSTM: onnx_minimal.py
            rkind = None if minimal else _check_recurrent(layer, lw)
            flow.log_tm = not layer.batch_first
            x = flow.physical(g, True)
            y, _, _ = (minimal_layer(g, layer, x, None, lengths.get("int64"),
                                     f"{base}_{cls.__name__.lower()}_") if minimal else
                       _recurrent(g, layer, rkind, x, None, None, lengths.get("int32"),
                                  f"{base}_{rkind.lower()}_"))
            D = 2 if layer.bidirectional else 1
            flow.name, flow.dims = y, flow.dims[:2] + [D * layer.hidden_size]
            flow.phys_tm = True
        elif kind == "picker":
            if cls not in (Last, LastBidirectional, MeanPool):
                raise ConversionError(f"{lw} is a sequence picker with no ONNX form here. "
                                      f"Supported: {_SUPPORTED}")
            flow.log_tm = not layer.batch_first
            _picker(g, layer, flow, lengths.get("int64"), f"{base}_{cls.__name__.lower()}")
        elif kind == "sequential":
            flow.physical(g, False)
            outer_has_time = flow.has_time
            _sequential(g, layer, flow, lengths, f"{where} layer {i}")
            flow.has_time = flow.has_time if layer._has_sequence_layers else outer_has_time
            flow.phys_tm = flow.log_tm = False
        elif cls is Embedding:
            flow.name = g.op("Gather", [g.weight(layer.weight.data, f"{base}_embedding"),
                                        flow.name], f"{base}_embedded", axis=0)
            flow.dims = flow.dims + [layer.embedding_dim]
        elif cls is Linear:
            z = g.op("MatMul", [flow.name, g.weight(layer.weight.data.T, f"{base}_weight")],
                     f"{base}_matmul")
            if layer.bias is not None:
                z = g.op("Add", [z, g.weight(layer.bias.data, f"{base}_bias")], f"{base}_linear")
            flow.name, flow.dims = z, flow.dims[:-1] + [layer.out_features]
            if layer.activation != "linear":
                _activation(g, flow, layer.activation, -1, f"{base}_{layer.activation}")
        elif cls in (Tanh, Sigmoid, ReLU, Softmax, LogSoftmax):
            _activation(g, flow, layer._name, layer.dim, f"{base}_{layer._name}")
        elif cls is Dropout:
            pass                                          # the graph is the evaluation mode
        elif cls is LayerNorm:
            if g.opset < 17:
                raise ConversionError(f"{lw}: ONNX's LayerNormalization needs opset >= 17, "
                                      f"got opset={g.opset}")
            k = len(layer.normalized_shape)
            if k > 1:                                     # the normalised axes may include time
                flow.physical(g, flow.log_tm)
            scale = layer.weight.data if layer.weight is not None else \
                np.ones(layer.normalized_shape)
            inputs = [flow.name, g.weight(scale, f"{base}_scale")]
            if layer.bias is not None:
                inputs.append(g.weight(layer.bias.data, f"{base}_shift"))
            flow.name = g.op("LayerNormalization", inputs, f"{base}_layernorm", axis=-k,
                             epsilon=layer.eps)
        else:
            raise ConversionError(f"{lw} has no ONNX form here. Supported: {_SUPPORTED}")
    flow.physical(g, False)                               # per-step outputs: samples first


# -- entry points -----------------------------------------------------------------------------

def _model_dtype(model: Module, dtype) -> np.dtype:
    if dtype is not None:
        return _validate.float_dtype(dtype)
    found = sorted({p.data.dtype.name for p in model.parameters()})
    if len(found) > 1:
        raise ConversionError(f"the model mixes parameter dtypes {found}; pass dtype=np.float32 "
                              f"or np.float64 for the graph")
    return np.dtype(found[0]) if found else np.dtype(np.float32)


def _first_input(model: Sequential):
    """(is token ids?, feature size or None) of a Sequential's input."""
    for layer in model.layers:
        if type(layer) is Embedding:
            return True, None
        if isinstance(layer, (RecurrentLayer, MinimalLayer)):
            return False, layer.input_size
        if type(layer) is Linear:
            return False, layer.in_features
        if type(layer) is LayerNorm:
            return False, layer.normalized_shape[-1]
        if type(layer) is Sequential:
            return _first_input(layer)
        if type(layer) not in (Dropout, Tanh, Sigmoid, ReLU, Softmax, LogSoftmax):
            return False, None
    return False, None


def to_onnx(model, opset: int | None = None, *, lengths: bool = False,
            initial_states: bool = False, dtype=None):
    """The ONNX graph of ``model`` as an ``onnx.ModelProto``, checked by ``onnx.checker``.

    ``model``: an ``elman.RNN``/``GRU``/``LSTM``, an ``elman.Sequential`` (or a single
    non-recurrent layer, exported as a one-layer Sequential). ``opset``: the ONNX opset, default
    :func:`default_opset`. ``lengths``: add the ``lengths`` input (one int64 per sample) for
    right-padded variable-length batches. ``initial_states``: add ``h0`` (and ``c0``) inputs to
    a recurrent layer's graph (without them the states start at zero). ``dtype``: the graph's
    float type, default the model's. Inputs and outputs are listed in the module docstring.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper
    if not isinstance(model, Module):
        raise TypeError(f"to_onnx expects an elman module, got {type(model).__name__}")
    highest = onnx.defs.onnx_opset_version()
    opset = default_opset() if opset is None else _validate.positive_int("opset", opset)
    if not MIN_OPSET <= opset <= highest:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {highest}] (the highest this onnx "
                         f"package knows), got {opset}")
    dt = _model_dtype(model, dtype)
    g = _Graph(onnx, dt, opset)
    T = g.tensor_type
    inputs, outputs = [], []

    def lengths_input():
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]))
        g._used.add("lengths")
        return {"int64": "lengths",
                "int32": g.op("Cast", ["lengths"], "lengths_int32", to=TensorProto.INT32)}

    for reserved in ("input", "h0", "c0", "output", "h_n", "c_n"):
        g._used.add(reserved)
    if isinstance(model, (RecurrentLayer, MinimalLayer)):
        minimal = isinstance(model, MinimalLayer)         # MinGRU/MinLSTM: onnx_minimal.py
        kind = "GRU" if minimal else _check_recurrent(model, f"the model "
                                                              f"({type(model).__name__})")
        D, H, L = (2 if model.bidirectional else 1), model.hidden_size, model.num_layers
        seq_dims = ["batch", "time"] if model.batch_first else ["time", "batch"]
        inputs.append(helper.make_tensor_value_info("input", T, seq_dims + [model.input_size]))
        h0 = c0 = None
        if initial_states:
            h0 = "h0"
            inputs.append(helper.make_tensor_value_info("h0", T, [L * D, "batch", H]))
            if kind == "LSTM":
                c0 = "c0"
                inputs.append(helper.make_tensor_value_info("c0", T, [L * D, "batch", H]))
        lens = lengths_input() if lengths else {}
        X = g.op("Transpose", ["input"], "input_tm", perm=[1, 0, 2]) if model.batch_first \
            else "input"
        Y, h_n, c_n = (minimal_layer(g, model, X, h0, lens.get("int64"), "") if minimal else
                       _recurrent(g, model, kind, X, h0, c0, lens.get("int32"), ""))
        if model.batch_first:
            Y = g.op("Transpose", [Y], "output_bf", perm=[1, 0, 2])
        g.nodes.append(helper.make_node("Identity", [Y], ["output"], name="node_output"))
        g.nodes.append(helper.make_node("Identity", [h_n], ["h_n"], name="node_h_n"))
        outputs.append(helper.make_tensor_value_info("output", T, seq_dims + [D * H]))
        outputs.append(helper.make_tensor_value_info("h_n", T, [L * D, "batch", H]))
        if kind == "LSTM":
            g.nodes.append(helper.make_node("Identity", [c_n], ["c_n"], name="node_c_n"))
            outputs.append(helper.make_tensor_value_info("c_n", T, [L * D, "batch", H]))
        doc = f"elman {type(model).__name__}: {model.extra_repr()}"
    else:
        if initial_states:
            raise ValueError("initial_states=True applies to a recurrent layer's graph; a "
                             "Sequential starts its recurrent layers at zero")
        seq = model if type(model) is Sequential else Sequential([model])
        if isinstance(model, Sequential) and type(model) is not Sequential:
            raise ConversionError(f"the model is a {type(model).__name__}, a subclass of "
                                  f"elman.Sequential whose forward may differ")
        has_time = seq._has_sequence_layers
        if lengths and not has_time:
            raise ValueError(f"lengths=True needs a model with sequence layers ({_SEQUENCE_LAYERS})"
                             f"; this one has none")
        ids, F = _first_input(seq)
        dims = ["batch", "time"] if has_time or ids else ["batch"]
        if not ids:
            dims = dims + [F if F is not None else "features"]
        inputs.append(helper.make_tensor_value_info(
            "input", TensorProto.INT64 if ids else T, dims))
        lens = lengths_input() if lengths else {}
        flow = _Flow("input", list(dims), has_time)
        _sequential(g, seq, flow, lens, "model")
        g.nodes.append(helper.make_node("Identity", [flow.name], ["output"], name="node_output"))
        outputs.append(helper.make_tensor_value_info("output", T, flow.dims))
        doc = "elman " + " -> ".join(type(layer).__name__ for layer in seq.layers)
    if getattr(model, "training", False) and any(
            isinstance(m, Dropout) and m.p > 0 or isinstance(m, (RecurrentLayer, MinimalLayer)) and m.dropout > 0
            for _, m in model.named_modules()):
        doc += " (exported in evaluation mode: dropout off)"
    graph = helper.make_graph(g.nodes, "elman", inputs, outputs, initializer=g.initializers,
                              doc_string=doc)
    proto = _make_model(helper, graph, opset)
    proto.producer_version = __version__
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path, opset: int | None = None, *, lengths: bool = False,
                initial_states: bool = False, dtype=None):
    """Write ``model`` as an ONNX file at ``path`` (see :func:`to_onnx` for the arguments) and
    return the ``onnx.ModelProto``. The file is written to a temporary name and renamed into
    place, so a failed export leaves no partial file.

    Example (needs onnx; tested in ``tests/test_interop_onnx.py``)::

        export_onnx(elman.GRU(4, 8, num_layers=2, bidirectional=True), "gru.onnx")
        out, h_n = onnxruntime.InferenceSession("gru.onnx").run(None, {"input": x})
    """
    proto = to_onnx(model, opset, lengths=lengths, initial_states=initial_states, dtype=dtype)
    data = proto.SerializeToString()
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".elman-", suffix=".onnx.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return proto


# -- the command line: elman export-onnx --------------------------------------------------------

HELP = "write a saved model (elman.save checkpoint) as an ONNX graph"
DESCRIPTION = """Write a model saved with elman.save (a recurrent layer or a Sequential) as an
ONNX file of standard operators (RNN/GRU/LSTM, Gather, MatMul, ...) with dynamic batch and time
axes. The graph is the model in evaluation mode. Run it with onnxruntime:
    sess = onnxruntime.InferenceSession("model.onnx")
    prediction = sess.run(None, {"input": x})[0]"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``elman export-onnx``."""
    parser.add_argument("checkpoint", help="a model saved with elman.save")
    parser.add_argument("output", help="the ONNX file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: the highest the installed onnxruntime "
                             f"supports, at least {MIN_OPSET})")
    parser.add_argument("--lengths", action="store_true",
                        help="add a 'lengths' input (int64, one per sample) for right-padded "
                             "variable-length batches")
    parser.add_argument("--initial-states", action="store_true",
                        help="add h0 (and c0) inputs (a recurrent layer only)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None,
                        help="the graph's float type (default: the model's; onnxruntime runs "
                             "recurrent operators in float32 only)")
    parser.add_argument("--verify", action="store_true",
                        help="run the graph with onnxruntime on a random batch and compare with "
                             "elman")


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint, export it, print what was written (errors exit with a message)."""
    if not os.path.isfile(args.checkpoint):
        raise CommandError(f"error: no such checkpoint file: {args.checkpoint}")
    try:
        model = load(args.checkpoint)
        proto = export_onnx(model, args.output, args.opset, lengths=args.lengths,
                            initial_states=args.initial_states, dtype=args.dtype)
    except ImportError as e:
        raise CommandError(f"error: {e}") from None
    except (ValueError, TypeError) as e:                  # ConversionError, CheckpointError, ...
        raise CommandError(f"error: {args.checkpoint}: {e}") from None

    def describe(values):
        out = []
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            out.append(f"{v.name} {tuple(dims)}")
        return ", ".join(out)
    print(f"wrote {args.output} (opset {proto.opset_import[0].version}, "
          f"{os.path.getsize(args.output)} bytes)")
    print(f"  inputs:  {describe(proto.graph.input)}")
    print(f"  outputs: {describe(proto.graph.output)}")
    if args.verify:
        from onnx import TensorProto
        if proto.graph.output[0].type.tensor_type.elem_type == TensorProto.DOUBLE and any(
                n.op_type in ("RNN", "GRU", "LSTM") for n in proto.graph.node):
            raise CommandError("error: --verify: onnxruntime runs RNN/GRU/LSTM in float32 only; "
                               "export with --dtype float32 to run the graph there")
        try:
            err = _verify(model.eval(), args.output, args.lengths, args.initial_states)
        except ImportError:
            raise CommandError("error: --verify needs onnxruntime: pip install onnxruntime") \
                from None
        print(f"  onnxruntime vs elman on a random batch: max relative difference {err:.2e}")
    return 0


def export_onnx_main(argv=None) -> int:
    """``elman export-onnx`` as a function: ``export_onnx_main(["model.npz", "model.onnx"])``."""
    parser = argparse.ArgumentParser(prog="elman export-onnx", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _verify(model, path, lengths: bool, initial_states: bool, batch: int = 3, steps: int = 7,
            seed: int = 0) -> float:
    """Max relative difference between onnxruntime and elman on a random batch."""
    import onnxruntime as ort
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    feeds, args, kwargs = {}, [], {}
    spec = {i.name: i for i in sess.get_inputs()}
    elem = np.float64 if spec["input"].type == "tensor(double)" else np.float32
    shape = [batch if d == "batch" else steps if d == "time" else d
             for d in spec["input"].shape]
    if spec["input"].type == "tensor(int64)":
        first = next(m for m in model.named_modules() if type(m[1]) is Embedding)[1]
        x = rng.integers(0, first.num_embeddings, size=shape)
    else:
        x = rng.standard_normal(shape).astype(elem)
    feeds["input"] = x
    n = batch
    if lengths:
        feeds["lengths"] = kwargs["lengths"] = rng.integers(1, steps + 1, size=n)
        feeds["lengths"][0] = steps
    if initial_states:
        states = [rng.standard_normal(spec[k].shape[:1] + [n] + spec[k].shape[2:]).astype(elem)
                  for k in ("h0", "c0") if k in spec]
        for k, s in zip(("h0", "c0"), states):
            feeds[k] = s
        args.append(tuple(states) if len(states) == 2 else states[0])
    theirs = sess.run(None, feeds)[0]
    ours = model(x, *args, **kwargs)
    if isinstance(model, (RecurrentLayer, MinimalLayer)):
        ours = ours[0]
    scale = max(float(np.max(np.abs(ours))), 1e-6)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) / scale)
