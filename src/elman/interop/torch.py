"""PyTorch in and out: :func:`from_torch` builds the elman twin of a ``torch.nn`` module, and
:func:`to_torch` builds the ``torch.nn`` twin of an elman module.

Both directions keep the configuration (every constructor argument, the training/evaluation mode)
and copy the weights bit for bit: elman's parameters carry PyTorch's names, shapes and gate
orders, so ``from_torch(m).state_dict()`` equals ``m.state_dict()`` array for array, and
``to_torch(from_torch(m))`` is ``m`` again. torch is imported when a converter is called, never
when elman is imported.

What converts (both ways)
-------------------------
=================================================  ===============================================
``torch.nn``                                       elman
=================================================  ===============================================
``RNN``, ``GRU``, ``LSTM`` (any arguments:         ``RNN``, ``GRU``, ``LSTM``
bidirectional, ``proj_size``, ``batch_first``,
``dropout``, ``bias=False``, relu)
``RNNCell``, ``GRUCell``, ``LSTMCell``             ``RNNCell``, ``GRUCell``, ``LSTMCell``
``Linear``                                         ``Linear`` (``Dense``) without activation
``Linear`` followed by ``Tanh`` (etc.)             ``to_torch`` of a ``Linear`` with an activation
                                                   (``Sequential(Linear, Tanh)`` alone; spliced
                                                   flat into an enclosing Sequential)
``Embedding`` (``padding_idx``; ``sparse`` is      ``Embedding``
accepted: gradients are dense in elman)
``Dropout``, ``LayerNorm``                         ``Dropout``, ``LayerNorm``
``Tanh``, ``Sigmoid``, ``ReLU``, ``Softmax(dim)``, the activation layers
``LogSoftmax(dim)``
``Sequential`` of the non-recurrent layers above   ``Sequential`` (layers named "0", "1", ...)
:class:`TorchSequential`, :class:`TorchLast`,      ``Sequential`` with recurrent layers, ``Last``,
:class:`TorchLastBidirectional`,                   ``LastBidirectional``, ``MeanPool``
:class:`TorchMeanPool` (defined here)
=================================================  ===============================================

**Recurrent layers inside a model.** A ``torch.nn.RNN``/``GRU``/``LSTM`` returns a tuple
``(output, state)``, so a plain ``torch.nn.Sequential`` cannot chain it with other layers, and
``from_torch`` refuses one that tries. Convert the layers one by one instead::

    model = elman.Sequential([from_torch(net.embed), from_torch(net.lstm), elman.Last(),
                              from_torch(net.fc)])

Going the other way, ``to_torch`` of an ``elman.Sequential`` with recurrent layers or pickers
gives a :class:`TorchSequential`: a ``torch.nn.Sequential`` whose ``forward(x, lengths=None)``
does what elman's does (samples-first data; ``lengths`` run the recurrent layers on packed
sequences, as ``pack_padded_sequence(..., enforce_sorted=False)`` and ``pad_packed_sequence``),
with the same parameter names (``"1.weight_ih_l0"``).

Dtypes
------
The elman module computes in the dtype of the torch parameters: float32 or float64. A float16 or
bfloat16 module is refused unless ``dtype=np.float32`` (or float64) is passed, which converts its
values exactly (every float16/bfloat16 number is a float32) but then computes in float32, so the
outputs are not the half-precision ones. ``dtype`` may also ask for any other cast on purpose.

What is refused (:class:`~elman.interop.ConversionError`, naming the layer)
---------------------------------------------------------------------------
- a type not in the table, including subclasses of the supported ones (their ``forward`` may
  differ) and models with their own ``forward`` (convert their layers instead);
- a module with forward or backward hooks (or global module hooks) or a parametrization
  (``torch.nn.utils.parametrize``, ``weight_norm``): elman would not run them;
- ``Embedding`` with ``max_norm`` (renormalises rows during lookup) or ``scale_grad_by_freq``;
- ``Softmax``/``LogSoftmax`` with ``dim=None`` (the dimension would depend on the input's rank);
- parameters on the ``meta`` device (no values), of mixed dtypes, or of non-float dtypes.
- (``to_torch``) the options ``torch.nn`` lacks: ``GRU(reset_after=False)``,
  ``peephole=True`` (``LSTM``, ``LSTMCell``), ``layer_norm``, ``recurrent_dropout``,
  ``input_dropout``, ``zoneout``
  (which also changes evaluation: the state is the expectation ``p h_prev + (1 - p) h``).
  ``from_torch`` never meets them: no ``torch.nn`` module has them.
``requires_grad=False`` is accepted (elman has no frozen parameters; leave such a parameter out of
the optimizer). Buffers are not used by any supported module.
"""
from __future__ import annotations

import numpy as np

from .. import _validate, registry
from ..cells import GRUCell, LSTMCell, RNNCell
from ..layers import (Dropout, Embedding, Last, LastBidirectional, LayerNorm, Linear, LogSoftmax,
                      MeanPool, ReLU, Sigmoid, Softmax, Tanh)
from ..model import Sequential
from ..recurrent import GRU, LSTM, RNN
from .errors import ConversionError

__all__ = ["from_torch", "to_torch", "TORCH_TYPES", "ELMAN_TYPES"]

#: The torch.nn types from_torch converts (plus the torch twins defined in this module).
TORCH_TYPES = ("RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell", "Linear", "Embedding",
               "Dropout", "LayerNorm", "Tanh", "Sigmoid", "ReLU", "Softmax", "LogSoftmax",
               "Sequential")
_TWIN_NAMES = ("TorchSequential", "TorchLast", "TorchLastBidirectional", "TorchMeanPool")

#: The elman types to_torch converts.
ELMAN_TYPES = (RNN, GRU, LSTM, RNNCell, GRUCell, LSTMCell, Linear, Embedding, Dropout, LayerNorm,
               Tanh, Sigmoid, ReLU, Softmax, LogSoftmax, Last, LastBidirectional, MeanPool,
               Sequential)


def _torch():
    try:
        import torch
    except ImportError as e:                              # pragma: no cover - needs no torch
        raise ImportError("elman.interop.torch needs PyTorch, which is not installed: "
                          "pip install torch (the CPU wheel is enough)") from e
    return torch


# -- the torch twins of elman's Sequential and sequence pickers ---------------------------------
# Defined on first use, so that importing this module does not import torch.

_TWINS: dict | None = None


def __getattr__(name):
    if name in _TWIN_NAMES:
        return _twins()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _twins() -> dict:
    global _TWINS
    if _TWINS is None:
        _TWINS = _define_twins(_torch())
    return _TWINS


def _define_twins(torch) -> dict:
    nn = torch.nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def time_major(x, batch_first):
        """(a (T, N, F) view of x, unbatched?) for (T, N, F), (N, T, F) or unbatched (T, F)."""
        if x.dim() == 2:
            return x.unsqueeze(1), True
        if x.dim() != 3:
            raise ValueError(f"expected a sequence (T, N, F), (N, T, F) or (T, F), got shape "
                             f"{tuple(x.shape)}")
        return (x.transpose(0, 1) if batch_first else x), False

    def last_index(xt, lengths):
        T, N = xt.shape[:2]
        if lengths is None:
            return torch.full((N,), T - 1, dtype=torch.long, device=xt.device)
        return torch.as_tensor(lengths, device=xt.device).long() - 1

    class TorchLast(nn.Module):
        """``elman.Last`` in torch: each sequence's last valid step, ``y[n] = x[lengths[n]-1, n]``
        (time-major), or the last step without ``lengths``."""

        def __init__(self, batch_first: bool = False):
            super().__init__()
            self.batch_first = bool(batch_first)

        def forward(self, x, lengths=None):
            xt, unbatched = time_major(x, self.batch_first)
            t = last_index(xt, lengths)
            y = xt[t, torch.arange(xt.shape[1], device=x.device)]
            return y[0] if unbatched else y

        def extra_repr(self):
            return f"batch_first={self.batch_first}"

    class TorchLastBidirectional(nn.Module):
        """``elman.LastBidirectional`` in torch: the forward half at each sequence's last valid
        step, the reverse half (``hidden_size`` features) at step 0."""

        def __init__(self, hidden_size: int, batch_first: bool = False):
            super().__init__()
            self.hidden_size = int(hidden_size)
            self.batch_first = bool(batch_first)

        def forward(self, x, lengths=None):
            xt, unbatched = time_major(x, self.batch_first)
            H = self.hidden_size
            t = last_index(xt, lengths)
            y = torch.cat([xt[t, torch.arange(xt.shape[1], device=x.device), :H], xt[0, :, H:]],
                          dim=1)
            return y[0] if unbatched else y

        def extra_repr(self):
            return f"hidden_size={self.hidden_size}, batch_first={self.batch_first}"

    class TorchMeanPool(nn.Module):
        """``elman.MeanPool`` in torch: the mean over each sequence's valid steps."""

        def __init__(self, batch_first: bool = False):
            super().__init__()
            self.batch_first = bool(batch_first)

        def forward(self, x, lengths=None):
            xt, unbatched = time_major(x, self.batch_first)
            T = xt.shape[0]
            if lengths is None:
                y = xt.mean(dim=0)
            else:
                lengths = torch.as_tensor(lengths, device=x.device)
                w = (torch.arange(T, device=x.device)[:, None] < lengths[None, :]).to(x.dtype)
                y = (xt * (w / lengths[None, :].to(x.dtype))[:, :, None]).sum(dim=0)
            return y[0] if unbatched else y

        def extra_repr(self):
            return f"batch_first={self.batch_first}"

    recurrent = (nn.RNN, nn.GRU, nn.LSTM)
    pickers = (TorchLast, TorchLastBidirectional, TorchMeanPool)

    class TorchSequential(nn.Sequential):
        """``elman.Sequential``'s forward in torch: ``forward(x, lengths=None)`` on
        samples-first data (N, T, F) or (N, T) token ids, whatever each recurrent layer's
        ``batch_first``; a recurrent layer passes on its output sequence (its final states are
        dropped) and runs packed when ``lengths`` are given; pickers receive ``lengths``."""

        def _sequence_layers(self) -> bool:
            return any(isinstance(m, recurrent + pickers)
                       or (isinstance(m, TorchSequential) and m._sequence_layers())
                       for m in self)

        def _output_is_sequence(self) -> bool:
            seq = False
            for m in self:
                if isinstance(m, recurrent):
                    seq = True
                elif isinstance(m, pickers):
                    seq = False
                elif isinstance(m, TorchSequential) and m._sequence_layers():
                    seq = m._output_is_sequence()
            return seq

        def forward(self, x, lengths=None):
            h = x
            if lengths is not None:
                lengths = torch.as_tensor(lengths)
            time_major_now = False
            has_time = self._sequence_layers()
            for layer in self:
                if isinstance(layer, recurrent + pickers):
                    want = not layer.batch_first
                    if want != time_major_now:
                        h = h.transpose(0, 1)
                    if isinstance(layer, recurrent):
                        if lengths is None:
                            h, _ = layer(h)
                        else:
                            T = h.shape[1] if layer.batch_first else h.shape[0]
                            packed = pack_padded_sequence(h, lengths.cpu().long(),
                                                          batch_first=layer.batch_first,
                                                          enforce_sorted=False)
                            out, _ = layer(packed)
                            h, _ = pad_packed_sequence(out, batch_first=layer.batch_first,
                                                       total_length=T)
                        time_major_now = want
                    else:
                        h = layer(h, lengths)
                        time_major_now = has_time = False
                elif isinstance(layer, TorchSequential):
                    if time_major_now:
                        h, time_major_now = h.transpose(0, 1), False
                    h = layer(h, lengths)
                    if layer._sequence_layers():
                        has_time = layer._output_is_sequence()
                else:
                    h = layer(h)
            if has_time and time_major_now:
                h = h.transpose(0, 1)
            return h

    for cls in (TorchLast, TorchLastBidirectional, TorchMeanPool, TorchSequential):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return {c.__name__: c for c in (TorchSequential, TorchLast, TorchLastBidirectional,
                                    TorchMeanPool)}


# -- from torch -------------------------------------------------------------------------------

def _torch_name(module) -> str:
    """``torch.nn.LSTM`` for torch's own classes, ``package.module.Class`` otherwise."""
    import torch.nn as nn
    cls = type(module)
    if getattr(nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _supported_list() -> str:
    return (", ".join(f"torch.nn.{n}" for n in TORCH_TYPES) + " (Sequential of the non-recurrent "
            "ones), and elman.interop.torch." + ", elman.interop.torch.".join(_TWIN_NAMES))


_HOOKS = (("_forward_pre_hooks", "forward pre-hooks"), ("_forward_hooks", "forward hooks"),
          ("_backward_pre_hooks", "backward pre-hooks"), ("_backward_hooks", "backward hooks"))
_GLOBAL_HOOKS = (("_global_forward_pre_hooks", "register_module_forward_pre_hook"),
                 ("_global_forward_hooks", "register_module_forward_hook"),
                 ("_global_backward_pre_hooks", "register_module_full_backward_pre_hook"),
                 ("_global_backward_hooks", "register_module_full_backward_hook"))


def _check_plain(module, where: str) -> None:
    """Refuse what would make the torch module compute something its elman twin does not."""
    for attr, what in _HOOKS:
        hooks = getattr(module, attr, None)
        if hooks:
            raise ConversionError(
                f"{where} ({_torch_name(module)}) has {len(hooks)} {what} registered; elman "
                f"would not run them, so its twin would compute something else. Remove them "
                f"(handle.remove()) before converting")
    from torch.nn.utils import parametrize
    if parametrize.is_parametrized(module):
        raise ConversionError(
            f"{where} ({_torch_name(module)}) has parametrized weights "
            f"({', '.join(module.parametrizations)}); elman stores plain arrays. Bake them in "
            f"first: torch.nn.utils.parametrize.remove_parametrizations(module, name)")


def _check_global_hooks(torch) -> None:
    import torch.nn.modules.module as tmod
    for attr, register in _GLOBAL_HOOKS:
        if getattr(tmod, attr, None):
            raise ConversionError(
                f"global module hooks are registered (torch.nn.modules.module.{register}); "
                f"they run on every torch module and elman would not run them. Remove them "
                f"before converting")


def _elman_dtype(torch, module, where: str, dtype):
    """The dtype of the elman twin: ``dtype`` if given, else that of the torch parameters."""
    params = list(module.parameters())
    for p in params:
        if p.is_meta:
            raise ConversionError(f"{where} ({_torch_name(module)}) has parameters on the meta "
                                  f"device (no values); materialise them first (to_empty + init)")
    if dtype is not None:
        return _validate.float_dtype(dtype)
    found = sorted({str(p.dtype) for p in params})
    if not found:
        return None
    if len(found) > 1:
        raise ConversionError(f"{where} ({_torch_name(module)}) mixes parameter dtypes "
                              f"{found}; pass dtype=np.float32 or np.float64")
    dt = params[0].dtype
    if dt == torch.float32:
        return np.dtype(np.float32)
    if dt == torch.float64:
        return np.dtype(np.float64)
    hint = (" (exact: every value of it is a float32 number, but the twin then computes in "
            "float32)" if dt in (torch.float16, torch.bfloat16) else "")
    raise ConversionError(
        f"{where} ({_torch_name(module)}) has {dt} parameters; elman computes in float32 or "
        f"float64. Pass dtype=np.float32 to from_torch{hint}, or convert the module with "
        f".float() or .double() first")


def _state(torch, module, dtype) -> dict:
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    return {k: v.detach().to(device="cpu", dtype=tdt).numpy()
            for k, v in module.state_dict().items()}


def from_torch(module, dtype=None, seed=None):
    """The elman twin of a ``torch.nn`` module: same class of layer, same arguments, same
    weights (bit for bit), same training/evaluation mode.

    ``module``: one of the types in the module docstring (:data:`TORCH_TYPES`), or a
    ``torch.nn.Sequential`` of the non-recurrent ones, or a :class:`TorchSequential`.
    ``dtype``: None keeps the parameters' dtype (float32 or float64); ``np.float32`` or
    ``np.float64`` casts (needed for float16/bfloat16 modules). ``seed``: an int or a NumPy
    Generator for the twin's own randomness (dropout masks); the weights come from torch.

    Raises :class:`~elman.interop.ConversionError` naming the first layer that cannot be
    converted exactly (see the module docstring).

    Example (needs torch; tested in ``tests/test_interop_torch.py``)::

        lstm = from_torch(torch.nn.LSTM(3, 8, num_layers=2, bidirectional=True))
        out, (h_n, c_n) = lstm(x)                            # as torch_lstm(x), in NumPy
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    _check_global_hooks(torch)
    return _from(torch, module, "the module", dtype, _validate.rng(seed))


def _from(torch, m, where: str, dtype, rng):
    nn = torch.nn
    _check_plain(m, where)
    twins = _twins()
    cls = type(m)
    if cls is nn.Sequential or cls is twins["TorchSequential"]:
        return _from_sequential(torch, m, where, dtype, rng, twin=cls is not nn.Sequential)
    dt = _elman_dtype(torch, m, where, dtype)
    kw = {} if dt is None else {"dtype": dt}
    name = cls.__name__
    if cls in (nn.RNN, nn.GRU, nn.LSTM):
        args = dict(num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first,
                    dropout=float(m.dropout), bidirectional=m.bidirectional, seed=rng, **kw)
        if cls is nn.RNN:
            args["nonlinearity"] = m.nonlinearity
        if cls is nn.LSTM:
            args["proj_size"] = m.proj_size
        out = registry.get("recurrent", name.lower())(m.input_size, m.hidden_size, **args)
    elif cls in (nn.RNNCell, nn.GRUCell, nn.LSTMCell):
        args = dict(bias=m.bias, seed=rng, **kw)
        if cls is nn.RNNCell:
            args["nonlinearity"] = m.nonlinearity
        out = {"RNNCell": RNNCell, "GRUCell": GRUCell, "LSTMCell": LSTMCell}[name](
            m.input_size, m.hidden_size, **args)
    elif cls is nn.Linear:
        out = Linear(m.in_features, m.out_features, bias=m.bias is not None, seed=rng, **kw)
    elif cls is nn.Embedding:
        if m.max_norm is not None:
            raise ConversionError(
                f"{where} (torch.nn.Embedding) has max_norm={m.max_norm}: torch renormalises "
                f"the rows it looks up (and rewrites its weight in place); elman's Embedding is "
                f"a plain lookup")
        if m.scale_grad_by_freq:
            raise ConversionError(
                f"{where} (torch.nn.Embedding) has scale_grad_by_freq=True, which changes its "
                f"gradients; elman's Embedding accumulates plain gradients")
        out = Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx, seed=rng,
                        **kw)
    elif cls is nn.LayerNorm:
        out = LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
                        bias=getattr(m, "bias", None) is not None, **kw)
    elif cls is nn.Dropout:
        out = Dropout(m.p, seed=rng)
    elif cls in (nn.Tanh, nn.Sigmoid, nn.ReLU):
        out = {"Tanh": Tanh, "Sigmoid": Sigmoid, "ReLU": ReLU}[name]()
    elif cls in (nn.Softmax, nn.LogSoftmax):
        if m.dim is None:
            raise ConversionError(
                f"{where} (torch.nn.{name}) has dim=None: torch then picks the dimension from "
                f"the input's rank (deprecated); give it explicitly, e.g. {name}(dim=-1)")
        out = (Softmax if cls is nn.Softmax else LogSoftmax)(dim=m.dim)
    elif cls is twins["TorchLast"]:
        out = Last(batch_first=m.batch_first)
    elif cls is twins["TorchLastBidirectional"]:
        out = LastBidirectional(m.hidden_size, batch_first=m.batch_first)
    elif cls is twins["TorchMeanPool"]:
        out = MeanPool(batch_first=m.batch_first)
    else:
        base = next((b for b in cls.__mro__[1:] if getattr(nn, b.__name__, None) is b
                     and b.__name__ in TORCH_TYPES), None)
        why = (f"a subclass of torch.nn.{base.__name__}, whose forward() may differ; convert "
               f"a plain torch.nn.{base.__name__}" if base is not None else
               "not a type elman can convert")
        raise ConversionError(
            f"{where} is a {_torch_name(m)}: {why}. Supported: {_supported_list()}. For a "
            f"model with its own forward(), convert its layers one by one, e.g. "
            f"elman.Sequential([from_torch(net.embed), from_torch(net.lstm), elman.Last(), "
            f"from_torch(net.fc)])")
    if list(out.named_parameters()):
        out.load_state_dict(_state(torch, m, out.dtype))
    out.train(m.training)
    return out


def _from_sequential(torch, m, where: str, dtype, rng, twin: bool):
    nn = torch.nn
    layers = []
    for key, child in m.named_children():
        child_where = f"{where} item {key!r}"
        if not twin and type(child) in (nn.RNN, nn.GRU, nn.LSTM):
            raise ConversionError(
                f"{child_where} is a {_torch_name(child)} inside a torch.nn.Sequential: a "
                f"recurrent layer returns a tuple (output, state), so torch cannot chain it "
                f"with the next layer. Convert the layers one by one and chain them with "
                f"elman.Sequential([..., from_torch(lstm), elman.Last(), ...])")
        layers.append(_from(torch, child, child_where, dtype, rng))
    out = Sequential(layers)
    object.__setattr__(out, "training", bool(m.training))     # the children keep their own
    return out


# -- to torch ---------------------------------------------------------------------------------

def to_torch(module):
    """The ``torch.nn`` twin of an elman module: same arguments, same weights (bit for bit),
    same dtype and training/evaluation mode, on the CPU.

    An ``elman.Linear`` with an activation becomes ``torch.nn.Sequential(Linear, activation)``,
    or, inside a Sequential, the two modules spliced in flat (so ``[..., Dense(8, 1,
    activation="sigmoid")]`` ends ``Linear, Sigmoid`` and keeps its parameter names; a layer
    after such a Dense moves up one index). An ``elman.Sequential`` becomes a
    ``torch.nn.Sequential`` when it holds no recurrent layer or picker, else a
    :class:`TorchSequential` (``forward(x, lengths=None)``, samples first). ``Embedding(sparse=)``
    and ``inplace=`` flags come back at their defaults.

    Example (needs torch)::

        torch_gru = to_torch(elman.GRU(4, 8, batch_first=True))   # torch.nn.GRU, same weights
    """
    torch = _torch()
    return _to(torch, module, "the module")


def _to(torch, m, where: str):
    parts = _to_parts(torch, m, where)
    if len(parts) == 1:
        return parts[0]
    return torch.nn.Sequential(*parts).train(m.training)


def _to_parts(torch, m, where: str) -> list:
    """The torch twin of ``m`` as a list of modules: two for a Linear with an activation (so a
    Sequential can splice them in flat), else one."""
    nn = torch.nn
    cls = type(m)
    if cls is Sequential:
        children = []
        for i, child in enumerate(m.layers):
            children += _to_parts(torch, child, f"{where} layer {i}")
        out = (_twins()["TorchSequential"] if m._has_sequence_layers else nn.Sequential)(*children)
        out.training = bool(m.training)                      # the children keep their own
        return [out]
    tdt = None
    if hasattr(m, "dtype"):
        tdt = torch.float64 if m.dtype == np.float64 else torch.float32
    act = None
    if cls in (GRU, GRUCell) and not m.reset_after:
        raise ConversionError(f"{where}: {cls.__name__}(reset_after=False) has no torch.nn "
                              "counterpart (torch's GRU resets after W_hn h)")
    for option in ("recurrent_dropout", "input_dropout", "layer_norm", "zoneout"):
        if getattr(m, option, 0.0):
            why = ("zoneout mixes each step's state with the previous one, in evaluation too"
                   if option == "zoneout" else "torch's recurrent layers drop out only between "
                   "layers" if "dropout" in option else "torch's have no normalisation inside")
            raise ConversionError(f"{where}: {cls.__name__}({option}={getattr(m, option)}) has "
                                  f"no torch.nn counterpart ({why}); build it without "
                                  f"{option} to convert")
    if cls in (LSTM, LSTMCell) and m.peephole:
        raise ConversionError(f"{where}: {cls.__name__}(peephole=True) has no torch.nn "
                              f"counterpart (torch.nn.{cls.__name__} has no peephole connections)")
    if cls in (RNN, GRU, LSTM):
        args = dict(num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first,
                    dropout=m.dropout, bidirectional=m.bidirectional, dtype=tdt)
        if cls is RNN:
            args["nonlinearity"] = m.nonlinearity
        if cls is LSTM:
            args["proj_size"] = m.proj_size
        out = getattr(nn, cls.__name__)(m.input_size, m.hidden_size, **args)
    elif cls in (RNNCell, GRUCell, LSTMCell):
        args = dict(bias=m.bias, dtype=tdt)
        if cls is RNNCell:
            args["nonlinearity"] = m.nonlinearity
        out = getattr(nn, cls.__name__)(m.input_size, m.hidden_size, **args)
    elif cls is Linear:
        out = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=tdt)
        act = {"linear": None, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU,
               "softmax": nn.Softmax, "log_softmax": nn.LogSoftmax}[m.activation]
    elif cls is Embedding:
        out = nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx,
                           dtype=tdt)
    elif cls is LayerNorm:
        out = nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
                           bias=m.bias is not None or not m.elementwise_affine, dtype=tdt)
    elif cls is Dropout:
        out = nn.Dropout(m.p)
    elif cls in (Tanh, Sigmoid, ReLU):
        out = getattr(nn, cls.__name__)()
    elif cls in (Softmax, LogSoftmax):
        out = getattr(nn, cls.__name__)(dim=m.dim)
    elif cls is Last:
        out = _twins()["TorchLast"](batch_first=m.batch_first)
    elif cls is LastBidirectional:
        out = _twins()["TorchLastBidirectional"](m.hidden_size, batch_first=m.batch_first)
    elif cls is MeanPool:
        out = _twins()["TorchMeanPool"](batch_first=m.batch_first)
    else:
        names = ", ".join(f"elman.{c.__name__}" for c in ELMAN_TYPES)
        raise ConversionError(f"{where} is a {cls.__module__}.{cls.__qualname__}, which has no "
                              f"torch twin here. Supported: {names}")
    state = m.state_dict()
    if state:
        with torch.no_grad():
            out.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    out.train(m.training)
    if act is None:
        return [out]
    act_module = act(dim=-1) if act in (nn.Softmax, nn.LogSoftmax) else act()
    return [out, act_module.train(m.training)]
