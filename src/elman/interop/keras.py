"""Keras 3 in: :func:`from_keras` builds the elman twin of a Keras ``Sequential`` model, from the
live model or from the files Keras saves, with the same outputs.

What it reads
-------------
- a live ``keras.Sequential`` (built: it has weights);
- a ``.keras`` file (``model.save("m.keras")``): a zip of ``config.json`` and
  ``model.weights.h5``, read with ``zipfile``, ``json`` and ``h5py`` -- **Keras itself is not
  imported**, so a model trained elsewhere loads where only NumPy and h5py are installed;
- a ``.weights.h5`` file (``model.save_weights("m.weights.h5")``) holds weights but no
  architecture: pass it as ``weights=`` next to something that has one -- a live model (e.g. the
  function that built the model, called again), a ``.keras`` file, the JSON of
  ``model.to_json()`` saved as a ``.json`` file, or that JSON parsed into a dict. The weights
  then come from the ``.weights.h5`` file, everything else from the first argument.

What converts
-------------
=================================================  ===============================================
Keras layer                                        elman
=================================================  ===============================================
``InputLayer`` (``keras.Input``)                   nothing
``Embedding``                                      ``Embedding``
``SimpleRNN`` (tanh or relu)                       ``RNN(nonlinearity=...)``
``GRU`` (``reset_after`` True or False)            ``GRU(reset_after=...)``
``LSTM``                                           ``LSTM``
``Bidirectional(rnn, merge_mode="concat")``        the layer with ``bidirectional=True``
... with ``return_sequences=False``                ... followed by ``Last`` (``LastBidirectional``)
``Dense`` (activation linear, tanh, sigmoid,       ``Dense`` with that activation
relu, softmax, log_softmax)
``Activation`` (the same activations)              ``Tanh``, ``Sigmoid``, ... (linear: nothing)
``Dropout``                                        ``Dropout``
``Masking`` (first layer)                          nothing: pass ``mask_value`` to elman (below)
=================================================  ===============================================

Recurrent layers are built ``batch_first=True`` (Keras' layout); the returned
:class:`~elman.Sequential` takes and returns samples-first arrays, as Keras does, and is in
evaluation mode (``model(x)`` is Keras' ``model(x)``: no dropout; ``fit`` switches to training
and back).

Weight layouts (Keras stores ``x @ kernel``, elman/PyTorch ``W @ x``): every matrix is
transposed. Keras' LSTM gate columns ``[i|f|c|o]`` are PyTorch's rows ``[i|f|g|o]``; Keras' GRU
columns ``[z|r|h]`` are reordered to ``[r|z|n]``. Keras has one bias per recurrent layer where
PyTorch has two: it goes to ``bias_ih`` and ``bias_hh`` is zero -- except for a GRU with
``reset_after=True``, whose bias is ``(2, 3U)`` = [input bias; recurrent bias], exactly
``bias_ih`` and ``bias_hh`` (the recurrent one multiplied by the reset gate, as in PyTorch).
``use_bias=False`` gives ``bias=False``.

Masking
-------
An ``Embedding(mask_zero=True)`` or a first ``Masking(mask_value=v)`` makes Keras skip padded
steps. elman's ``Sequential`` does the same when told the padding value at call time:
``model.predict(x, mask_value=0)`` (``mask_value=v`` for ``Masking``; also ``fit`` and
``evaluate``). Without it the padding steps are processed as data, as they are in Keras without
a mask. Per-step outputs (``return_sequences=True`` at the end) agree on the valid steps; what
either framework returns at padded steps is not meaningful.

Dtypes
------
The elman model computes in the Keras model's dtype: ``float32`` or ``float64`` policies. A
mixed-precision or float16/bfloat16 model is refused unless ``dtype=np.float32`` (or float64)
is passed, which converts its variables exactly but computes in that dtype. Quantized layers
and LoRA-enabled layers are refused (their stored variables are not the plain kernel).

Training-only settings
----------------------
``dropout`` and ``recurrent_dropout`` of a recurrent layer become the elman layer's
``input_dropout`` and ``recurrent_dropout`` (one mask per sequence, the same at every step, as
in Keras; Keras draws one mask per gate, elman one per layer-direction). ``noise_shape`` of
``Dropout``, regularizers, constraints, and a ``recurrent_dropout`` the elman layer cannot take
(a GRU with ``reset_after=False``) act only while training in Keras and have no elman
counterpart: the converted model predicts exactly the same, and :class:`TrainingOnlyWarning`
says what fine-tuning it in elman will train without. ``trainable=False`` is accepted (elman has no frozen
parameters: leave them out of the optimizer).

What is refused (:class:`~elman.interop.ConversionError`, naming the layer)
---------------------------------------------------------------------------
- a layer type not in the table, a subclass of one (its ``call`` may differ), a custom or
  ``Lambda`` layer, a nested model; a model that is not a plain ``keras.Sequential``
  (functional or subclassed) -- the message lists what converts;
- ``LSTM``/``GRU`` with another ``activation`` than tanh or ``recurrent_activation`` than
  sigmoid (``hard_sigmoid``, a custom function), ``SimpleRNN`` other than tanh/relu, ``Dense``
  or ``Activation`` with an activation elman lacks (``gelu``, ``swish``, a custom one);
- ``go_backwards=True`` outside ``Bidirectional``, ``stateful=True``, ``return_state=True``;
  ``Bidirectional`` with ``merge_mode`` other than ``"concat"`` or with forward and backward
  layers of different kinds or sizes;
- ``Masking`` anywhere but first; an unbuilt model (no weights); a weights file that does not
  fit the architecture; legacy Keras 2 ``.h5`` files (load with Keras and pass the model, or
  re-save as ``.keras``); sharded ``.weights.json`` weights.
"""
from __future__ import annotations

import io
import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .. import _validate, registry
from ..layers import Dense, Dropout, Embedding, Last, LastBidirectional, LogSoftmax, ReLU, \
    Sigmoid, Softmax, Tanh
from ..model import Sequential
from .errors import ConversionError

__all__ = ["from_keras", "KERAS_LAYERS", "TrainingOnlyWarning"]

#: The Keras layer classes from_keras converts.
KERAS_LAYERS = ("InputLayer", "Embedding", "Masking", "SimpleRNN", "GRU", "LSTM", "Bidirectional",
                "Dense", "Activation", "Dropout")
_RECURRENT = ("SimpleRNN", "GRU", "LSTM")
_ELMAN_CELL = {"SimpleRNN": "rnn", "GRU": "gru", "LSTM": "lstm"}     # registry names

#: Keras activation name -> elman activation-layer class (None: the identity).
_ACTIVATION_LAYERS = {"linear": None, "tanh": Tanh, "sigmoid": Sigmoid, "relu": ReLU,
                      "softmax": Softmax, "log_softmax": LogSoftmax}


class TrainingOnlyWarning(UserWarning):
    """A Keras setting that acts only in training (dropout inside a recurrent layer, a
    regularizer, a constraint) has no elman counterpart: the converted model predicts the same,
    but training it in elman goes without that setting."""


@dataclass
class _Layer:
    """One Keras layer, described alike whether it came from a live model or from a file."""
    index: int                 # position in keras' model.layers (InputLayer not counted)
    cls: str                   # Keras class name
    name: str
    config: dict
    weights: list = field(default_factory=list)   # Keras' order: kernel, recurrent, bias
    inner: list = field(default_factory=list)     # Bidirectional: [forward, backward]
    live: object = None                            # the layer object, for a live model

    @property
    def where(self) -> str:
        return f"layer {self.index} {self.name!r} (keras.layers.{self.cls})"


# -- the entry point ----------------------------------------------------------------------------

def from_keras(model_or_path, weights=None, *, dtype=None) -> Sequential:
    """The elman twin of a Keras 3 ``Sequential`` model: same layers, same weights (transposed
    and gate-reordered into PyTorch's layout), same outputs.

    ``model_or_path``: a built ``keras.Sequential``; a path to a ``.keras`` file (read without
    importing Keras); a ``.json`` file or dict holding ``model.to_json()`` (then ``weights`` is
    required). ``weights``: a path to a ``.weights.h5`` file (``model.save_weights``) whose
    values replace those of ``model_or_path``. ``dtype``: compute in this float dtype instead
    of the model's (needed for mixed-precision or float16 models).

    Returns an :class:`elman.Sequential` in evaluation mode, samples first. If the Keras model
    masks (``Embedding(mask_zero=True)``, ``Masking``), pass the padding value when calling it:
    ``model.predict(x, mask_value=0)``. Raises :class:`~elman.interop.ConversionError` naming
    the layer for anything it cannot reproduce exactly (see the module docstring).

    Example (needs h5py and a ``.keras`` file saved by Keras)::

        model = from_keras("classifier.keras")
        probs = model.predict(token_ids, mask_value=0)    # as keras' model.predict(token_ids)
    """
    if dtype is not None:
        dtype = _validate.float_dtype(dtype)
    if isinstance(model_or_path, (str, os.PathLike)):
        layers = _layers_from_path(os.fspath(model_or_path), weights is None)
    elif isinstance(model_or_path, dict):
        layers = _layers_from_config(model_or_path, "the config")
    else:
        layers = _layers_from_live(model_or_path, weights is None)
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be a path to a .weights.h5 file, got "
                            f"{type(weights).__name__}")
        _read_weights_file(os.fspath(weights), layers)
    elif isinstance(model_or_path, dict):
        raise ConversionError("a model config holds no weights: pass weights='model.weights.h5'"
                              " as well")
    notes: list[str] = []
    model = _convert(layers, dtype, notes)
    for note in dict.fromkeys(notes):          # a Bidirectional's two halves say it once
        warnings.warn(note, TrainingOnlyWarning, stacklevel=2)
    return model


# -- reading: live models -----------------------------------------------------------------------

def _keras_module(obj):
    """The ``keras`` package a live object comes from (imported already, since it exists)."""
    import importlib
    try:
        return importlib.import_module("keras")
    except ImportError as e:                               # pragma: no cover - cannot happen
        raise TypeError(f"from_keras takes a keras.Sequential, a path or a config dict, got "
                        f"{type(obj).__module__}.{type(obj).__qualname__}") from e


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _layers_from_live(model, read_weights: bool) -> list[_Layer]:
    mod = type(model).__module__
    if not (mod == "keras" or mod.startswith("keras.")):
        raise TypeError(f"from_keras takes a keras.Sequential, a path to a .keras file or a "
                        f"config dict, got {_qualname(type(model))}")
    keras = _keras_module(model)
    if type(model) is not keras.Sequential:
        kind = ("a functional model" if type(model) is keras.Model or
                type(model).__name__ == "Functional" else f"a {_qualname(type(model))}")
        raise ConversionError(
            f"the model is {kind}; from_keras reads keras.Sequential models (a plain stack of "
            f"layers). Rebuild it as keras.Sequential([...]) with the same layers and copy the "
            f"weights over (set_weights/get_weights)")
    if read_weights and not model.built:
        raise ConversionError("the model has not been built, so it has no weights yet: give it "
                              "an input shape (keras.Input(...) first) or call it on a batch")
    out = []
    for i, layer in enumerate(model.layers):
        entry = _Layer(i, type(layer).__name__, layer.name, {}, live=layer)
        _check_builtin_live(keras, layer, f"layer {i} {layer.name!r}")
        entry.config = layer.get_config()
        if entry.cls == "Bidirectional":
            for part in (layer.forward_layer, layer.backward_layer):
                sub = _Layer(i, type(part).__name__, part.name, part.get_config(), live=part)
                _check_builtin_live(keras, part, f"{entry.where}: its wrapped layer "
                                    f"{part.name!r}")
                entry.inner.append(sub)
        if read_weights:
            for e in entry.inner or [entry]:
                e.weights = _live_weights(e)
        out.append(entry)
    return out


def _check_builtin_live(keras, layer, where: str) -> None:
    """Refuse anything but Keras' own classes from the table (``where`` names the layer)."""
    cls = type(layer)
    name = cls.__name__
    if getattr(keras.layers, name, None) is cls and name in KERAS_LAYERS:
        return
    shown = f"keras.layers.{name}" if getattr(keras.layers, name, None) is cls \
        else _qualname(cls)
    base = next((b.__name__ for b in cls.__mro__[1:] if b.__name__ in KERAS_LAYERS
                 and getattr(keras.layers, b.__name__, None) is b), None)
    why = (f"a subclass of keras.layers.{base}, whose call() may differ; convert a plain "
           f"keras.layers.{base}" if base is not None else _unsupported_why(name))
    raise ConversionError(f"{where} is a {shown}: {why}. Supported: {_supported()}")


def _unsupported_why(name: str) -> str:
    if name in ("Sequential", "Functional", "Model"):
        return "a nested model; build one flat keras.Sequential of its layers"
    if name == "Lambda":
        return "a Lambda layer runs arbitrary Python, which elman cannot reproduce"
    return "not a layer type elman can convert"


def _supported() -> str:
    return ", ".join(f"keras.layers.{n}" for n in KERAS_LAYERS)


def _live_weights(entry: _Layer) -> list:
    """The layer's variables as NumPy arrays, in the order Keras saves them."""
    layer = entry.live
    if not layer.built:
        raise ConversionError(f"{entry.where} has not been built, so it has no weights yet: "
                              f"give the model an input shape or call it on a batch")
    if entry.config.get("lora_rank"):
        return []                                  # refused by _check_dtype, with its reason
    if entry.cls == "Embedding":
        variables = [layer.embeddings]
    elif entry.cls == "Dense":
        variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    elif entry.cls in _RECURRENT:
        cell = layer.cell
        variables = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias
                                                            else [])
    else:
        variables = []
    from keras import ops
    return [np.array(ops.convert_to_numpy(v)) for v in variables]


# -- reading: files and configs -----------------------------------------------------------------

def _h5py():
    try:
        import h5py
    except ImportError as e:                               # pragma: no cover - needs no h5py
        raise ImportError("reading Keras weight files needs h5py, which is not installed: "
                          "pip install h5py") from e
    return h5py


def _layers_from_path(path: str, read_weights: bool) -> list[_Layer]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"from_keras: no such file: {path!r}")
    low = path.lower()
    if low.endswith(".weights.h5"):
        raise ConversionError(
            f"{path!r} holds weights but no architecture: pass the model it was saved from (or "
            f"its .keras file, or its model.to_json() as a .json file) first, and this file as "
            f"weights=, e.g. from_keras(build_model(), weights={path!r})")
    if low.endswith(".json") and not low.endswith(".weights.json"):
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        if read_weights:
            raise ConversionError(f"{path!r} holds the architecture but no weights: pass "
                                  f"weights='model.weights.h5' as well")
        return _layers_from_config(config, path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if "config.json" not in names:
                raise ConversionError(f"{path!r} is a zip file without config.json: not a .keras "
                                      f"file (it holds {names[:5]})")
            config = json.loads(z.read("config.json"))
            layers = _layers_from_config(config, path)
            if read_weights:
                if "model.weights.h5" not in names:
                    raise ConversionError(
                        f"{path!r} has no model.weights.h5 (it holds {names}); sharded or other "
                        f"weight formats are not read here: load the model with Keras and pass "
                        f"it to from_keras")
                data = z.read("model.weights.h5")
                with _h5py().File(io.BytesIO(data), "r") as h5:
                    _weights_from_h5(h5, layers, path)
        return layers
    if low.endswith((".h5", ".hdf5", ".weights.json")):
        raise ConversionError(
            f"{path!r} is not in the Keras 3 .keras format (a legacy Keras 2 HDF5 model, or "
            f"sharded weights): load it with keras.saving.load_model and pass the model, or "
            f"re-save it with model.save('model.keras')")
    raise ConversionError(f"{path!r} is neither a .keras file nor a .json model config")


def _read_weights_file(path: str, layers: list[_Layer]) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"from_keras: no such weights file: {path!r}")
    h5py = _h5py()
    if not h5py.is_hdf5(path):
        raise ConversionError(f"weights={path!r} is not an HDF5 file (expected a .weights.h5 "
                              f"file from model.save_weights)")
    with h5py.File(path, "r") as h5:
        _weights_from_h5(h5, layers, path)


def _entry_ok(entry: dict) -> bool:
    """A config entry names one of Keras' own layers (not a registered custom one)."""
    return (entry.get("module") in ("keras.layers", None)
            and not entry.get("registered_name")
            and entry.get("class_name") in KERAS_LAYERS)


def _layers_from_config(config, source: str) -> list[_Layer]:
    if not isinstance(config, dict) or "class_name" not in config:
        raise ConversionError(f"{source} is not a Keras model config (expected the JSON of "
                              f"model.to_json() or a .keras file's config.json)")
    if config["class_name"] != "Sequential" or config.get("registered_name") \
            or config.get("module") not in ("keras", "keras.models", None):
        kind = ("a functional model" if config["class_name"] in ("Functional", "Model")
                else f"a {config['class_name']} (module {config.get('module')!r})")
        raise ConversionError(
            f"{source} describes {kind}; from_keras reads keras.Sequential models (a plain stack "
            f"of layers). Rebuild it as keras.Sequential([...]) with the same layers")
    out = []
    i = 0
    for entry in config["config"]["layers"]:
        cls = entry.get("class_name")
        cfg = entry.get("config", {})
        if cls == "InputLayer" and _entry_ok(entry):
            continue
        layer = _Layer(i, cls, cfg.get("name", "?"), cfg)
        if not _entry_ok(entry):
            _refuse_entry(entry, layer.where.split(" (")[0], cfg)
        if cls == "Bidirectional":
            fwd = cfg["layer"]
            bwd = cfg.get("backward_layer")
            if bwd is None:          # older configs: the backward layer mirrors the forward one
                bwd = dict(fwd, config=dict(fwd["config"], go_backwards=not fwd["config"].get(
                    "go_backwards", False)))
            for part in (fwd, bwd):
                pcfg = part.get("config", {})
                where = f"{layer.where}: its wrapped layer {pcfg.get('name', '?')!r}"
                if not _entry_ok(part):
                    _refuse_entry(part, where, pcfg)
                layer.inner.append(_Layer(i, part["class_name"], pcfg.get("name", "?"), pcfg))
        out.append(layer)
        i += 1
    return out


def _refuse_entry(entry: dict, where: str, cfg: dict) -> None:
    cls = entry.get("class_name")
    module = entry.get("module")
    registered = entry.get("registered_name")
    if registered or (module not in ("keras.layers", None)):
        what = f"a custom layer {registered or cls!r} (module {module!r})"
        why = "elman cannot know what its call() computes"
    else:
        what = f"a keras.layers.{cls}"
        why = _unsupported_why(cls)
    raise ConversionError(f"{where} is {what}: {why}. Supported: {_supported()}")


def _snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: the group name of a layer in a weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _weights_from_h5(h5, layers: list[_Layer], source: str) -> None:
    """Fill each layer's weights from a Keras 3 weights file. A Sequential's layers are saved
    under ``layers/<class name in snake case>[_<k>]`` (k counting repeats), their own variables
    in ``vars/0``, ``vars/1``, ...; a recurrent layer's in ``cell/vars``, a Bidirectional's in
    ``forward_layer/cell/vars`` and ``backward_layer/cell/vars``."""
    if "layers" not in h5:
        legacy = "layer_names" in h5.attrs or "model_weights" in h5
        raise ConversionError(
            f"{source} has no 'layers' group: " + (
                "it is a legacy Keras 2 HDF5 file; load it with Keras and pass the model, or "
                "re-save the weights with Keras 3" if legacy else
                "not a Keras 3 weights file of a Sequential model"))
    used: dict[str, int] = {}
    for layer in layers:
        base = _snake_case(layer.cls)
        used[base] = used.get(base, -1) + 1
        path = "layers/" + (base if used[base] == 0 else f"{base}_{used[base]}")
        if layer.cls == "Bidirectional":
            for part, sub in zip(layer.inner, ("forward_layer", "backward_layer")):
                part.weights = _read_vars(h5, f"{path}/{sub}/cell/vars", layer, source)
        elif layer.cls in _RECURRENT:
            layer.weights = _read_vars(h5, f"{path}/cell/vars", layer, source)
        else:
            layer.weights = _read_vars(h5, f"{path}/vars", layer, source, optional=True)


def _read_vars(h5, path: str, layer: _Layer, source: str, optional: bool = False) -> list:
    if path not in h5:
        if optional:
            return []
        raise ConversionError(f"{source} has no weights for {layer.where} (no group {path!r}): "
                              f"it was saved from a different model")
    group = h5[path]
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    return [np.array(group[k]) for k in keys if k.isdigit()]


# -- converting ---------------------------------------------------------------------------------

def _act_name(value):
    """A Keras activation as a name, or None when it is not a plain built-in name."""
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, dict) and value.get("module") in ("keras.activations", None) \
            and not value.get("registered_name") and isinstance(value.get("config"), str):
        return value["config"].lower()            # the serialized form of a built-in function
    return None


def _act_repr(value) -> str:
    if isinstance(value, dict):
        return repr(value.get("registered_name") or value.get("config") or value)
    return repr(value)


def _policy(config: dict) -> str:
    """The layer's dtype policy name ("float32", "mixed_float16", "int8_from_float32", ...)."""
    d = config.get("dtype")
    if d is None:
        return "float32"
    if isinstance(d, str):
        return d
    if isinstance(d, dict):
        if "Quantized" in str(d.get("class_name", "")):
            return "quantized:" + str(d.get("config", {}).get("name"))
        return str(d.get("config", {}).get("name", "float32"))
    return str(d)


def _training_only(layer: _Layer, cfg: dict, notes: list, extra=()) -> None:
    """Note the settings that act only in training and that elman does not have."""
    found = [f"{k}={cfg[k]!r}" for k in extra if cfg.get(k)]
    found += [f"{k}={_act_repr(v)}" for k, v in cfg.items()
              if (k.endswith("_regularizer") or k.endswith("_constraint")) and v is not None]
    if found:
        notes.append(
            f"{layer.where}: {', '.join(found)} act(s) only in training and elman has no "
            f"counterpart; the converted model predicts the same, but training it in elman goes "
            f"without")


_DROPOUT_NAMES = {"dropout": "input_dropout", "recurrent_dropout": "recurrent_dropout"}


def _dropouts(cls: str, cfg: dict) -> dict:
    """The elman layer's ``input_dropout``/``recurrent_dropout`` for a Keras recurrent layer's
    ``dropout``/``recurrent_dropout`` (those in (0, 1) that elman can take)."""
    out = {}
    for keras_name, elman_name in _DROPOUT_NAMES.items():
        p = cfg.get(keras_name) or 0.0
        classic_gru = cls == "GRU" and not cfg.get("reset_after", True)
        if 0.0 < p < 1.0 and not (keras_name == "recurrent_dropout" and classic_gru):
            out[elman_name] = float(p)
    return out


def _check_recurrent(layer: _Layer, cfg: dict, bidirectional: bool, where: str) -> None:
    cls = layer.cls
    if cfg.get("stateful"):
        raise ConversionError(f"{where} has stateful=True: its state carries over between "
                              f"batches, which elman's Sequential does not do")
    if cfg.get("return_state"):
        raise ConversionError(f"{where} has return_state=True: elman's Sequential passes on "
                              f"the output sequence only")
    if cfg.get("go_backwards") and not bidirectional:
        raise ConversionError(f"{where} has go_backwards=True: elman runs a reverse direction "
                              f"only inside a bidirectional layer (use keras.layers.Bidirectional)")
    act = _act_name(cfg.get("activation", "tanh"))
    if cls == "SimpleRNN":
        if act not in ("tanh", "relu"):
            raise ConversionError(f"{where} has activation={_act_repr(cfg.get('activation'))}: "
                                  f"elman's RNN has tanh or relu")
    else:
        rec = _act_name(cfg.get("recurrent_activation", "sigmoid"))
        if act != "tanh" or rec != "sigmoid":
            raise ConversionError(
                f"{where} has activation={_act_repr(cfg.get('activation'))}, "
                f"recurrent_activation={_act_repr(cfg.get('recurrent_activation'))}: elman's "
                f"{'LSTM' if cls == 'LSTM' else 'GRU'} computes tanh and sigmoid only")


def _check_dtype(layer: _Layer, cfg: dict, arrays: list, dtype):
    """The float dtype this layer computes in, or a refusal."""
    policy = _policy(cfg)
    if policy.startswith("quantized:") or "int8" in policy or "int4" in policy \
            or "float8" in policy or cfg.get("quantization_config"):
        raise ConversionError(f"{layer.where} is quantized (dtype policy {policy!r}): elman "
                              f"stores plain float weights; convert the unquantized model")
    if cfg.get("lora_rank"):
        raise ConversionError(f"{layer.where} has LoRA enabled (lora_rank={cfg['lora_rank']}): "
                              f"its saved kernel is not the one it computes with; build a plain "
                              f"layer with the merged kernel and convert that")
    if dtype is not None:
        return dtype
    if policy in ("float32", "float64"):
        wanted = np.dtype(policy)
    else:
        raise ConversionError(
            f"{layer.where} computes in {policy!r}: elman computes in float32 or float64. Pass "
            f"dtype=np.float32 to convert it anyway (its values are kept exactly; the outputs "
            f"are then float32 results, not {policy} ones)")
    for a in arrays:
        if a.dtype != wanted:
            raise ConversionError(f"{layer.where} has {a.dtype} weights under dtype policy "
                                  f"{policy!r}; pass dtype= to choose the dtype to compute in")
    return wanted


def _shape_error(layer: _Layer, what: str, got, want) -> ConversionError:
    return ConversionError(f"{layer.where}: {what} has shape {tuple(got)}, expected {want} from "
                           f"the layer's config (weights from a different model?)")


def _recurrent_state(layer: _Layer, cfg: dict, arrays: list, suffix: str, features, dtype):
    """PyTorch-layout parameters of one direction, and the layer's input size."""
    cls, U = layer.cls, int(cfg["units"])
    G = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[cls]
    use_bias = cfg.get("use_bias", True)
    reset_after = cls == "GRU" and cfg.get("reset_after", True)
    if len(arrays) != (3 if use_bias else 2):
        raise ConversionError(f"{layer.where}: expected {3 if use_bias else 2} weight arrays "
                              f"(kernel, recurrent_kernel{', bias' if use_bias else ''}), got "
                              f"{len(arrays)}")
    kernel, recurrent = arrays[0], arrays[1]
    I = kernel.shape[0] if kernel.ndim == 2 else None
    if kernel.ndim != 2 or kernel.shape[1] != G * U:
        raise _shape_error(layer, "the kernel", kernel.shape, f"(input_size, {G * U})")
    if features is not None and I != features:
        raise ConversionError(f"{layer.where}: its kernel takes {I} input features but the "
                              f"previous layer gives {features}")
    if recurrent.shape != (U, G * U):
        raise _shape_error(layer, "the recurrent kernel", recurrent.shape, (U, G * U))
    order = np.arange(G * U)
    if cls == "GRU":                 # Keras' columns [z | r | h] -> PyTorch's rows [r | z | n]
        order = np.concatenate([np.arange(U, 2 * U), np.arange(U), np.arange(2 * U, 3 * U)])
    state = {f"weight_ih_l0{suffix}": kernel.T[order],
             f"weight_hh_l0{suffix}": recurrent.T[order]}
    if use_bias:
        bias = arrays[2]
        if reset_after:
            if bias.shape != (2, G * U):
                raise _shape_error(layer, "the bias", bias.shape, (2, G * U))
            b_ih, b_hh = bias[0], bias[1]             # [input bias; recurrent bias]
        else:
            if bias.shape != (G * U,):
                raise _shape_error(layer, "the bias", bias.shape, (G * U,))
            b_ih, b_hh = bias, np.zeros_like(bias)    # one bias: all on the input side
        state[f"bias_ih_l0{suffix}"] = b_ih[order]
        state[f"bias_hh_l0{suffix}"] = b_hh[order]
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in state.items()}, I


def _recurrent(layer: _Layer, features, dtype, layers_out: list, notes: list):
    bidirectional = layer.cls == "Bidirectional"
    parts = layer.inner if bidirectional else [layer]
    core = parts[0]
    cfg = core.config
    if bidirectional:
        merge = layer.config.get("merge_mode", "concat")
        if merge != "concat":
            raise ConversionError(
                f"{layer.where} has merge_mode={merge!r}: elman's bidirectional layers "
                f"concatenate the two directions (merge_mode='concat') only")
        fwd, bwd = parts
        if core.cls not in _RECURRENT:
            raise ConversionError(f"{layer.where} wraps a keras.layers.{core.cls}; elman's "
                                  f"bidirectional layers are SimpleRNN, GRU or LSTM")
        keys = ("units", "use_bias", "activation", "recurrent_activation", "reset_after",
                "return_sequences")
        diff = [k for k in keys if fwd.config.get(k) != bwd.config.get(k)]
        if bwd.cls != fwd.cls or diff:
            raise ConversionError(
                f"{layer.where} has a backward layer unlike its forward one ("
                f"{bwd.cls} vs {fwd.cls}" + (f"; {', '.join(diff)} differ" if diff else "")
                + "): elman's two directions share one configuration")
        if fwd.config.get("go_backwards") or not bwd.config.get("go_backwards"):
            raise ConversionError(f"{layer.where}: expected a forward layer with "
                                  f"go_backwards=False and a backward one with go_backwards=True")
        _training_only(layer, layer.config, notes)
    if core.cls not in _RECURRENT:           # pragma: no cover - guarded by the callers
        raise ConversionError(f"{layer.where} is not a recurrent layer")
    dropouts = _dropouts(core.cls, cfg)
    for part in parts:
        where = layer.where if part is layer else f"{layer.where}, its {part.name!r}"
        _check_recurrent(part, part.config, bidirectional, where)
        unmapped = [k for k in ("dropout", "recurrent_dropout")
                    if part.config.get(k) != dropouts.get(_DROPOUT_NAMES[k], 0.0)]
        _training_only(layer, part.config, notes, extra=unmapped)
    dt = None
    for part in parts:
        dt = _check_dtype(layer, part.config, part.weights, dtype)
    state, I = {}, None
    for part, suffix in zip(parts, ("", "_reverse")):
        s, I = _recurrent_state(part, part.config, part.weights, suffix, features, dt)
        state.update(s)
    U = int(cfg["units"])
    args = dict(bias=bool(cfg.get("use_bias", True)), batch_first=True,
                bidirectional=bidirectional, dtype=dt, seed=0)
    if core.cls == "SimpleRNN":
        args["nonlinearity"] = _act_name(cfg.get("activation", "tanh"))
    elif core.cls == "GRU":
        args["reset_after"] = bool(cfg.get("reset_after", True))
    elif cfg.get("unit_forget_bias", True) and args["bias"]:
        args["forget_bias"] = 1.0           # how Keras started it (the weights are loaded next)
    args.update(dropouts)
    module = registry.get("recurrent", _ELMAN_CELL[core.cls])(I, U, **args)
    module.load_state_dict(state)
    layers_out.append(module)
    D = 2 if bidirectional else 1
    if not cfg.get("return_sequences", False):
        layers_out.append(LastBidirectional(U, batch_first=True) if bidirectional
                          else Last(batch_first=True))
    return D * U


def _convert(layers: list[_Layer], dtype, notes: list) -> Sequential:
    """The elman Sequential; ``notes`` receives what acts only in training and is left out."""
    out: list = []
    features = None                  # the width of what the previous layer gives
    for k, layer in enumerate(layers):
        cfg = layer.config
        cls = layer.cls
        if cls in _RECURRENT or cls == "Bidirectional":
            features = _recurrent(layer, features, dtype, out, notes)
        elif cls == "Embedding":
            dt = _check_dtype(layer, cfg, layer.weights, dtype)
            if len(layer.weights) != 1:
                raise ConversionError(f"{layer.where}: expected one weight array (embeddings), "
                                      f"got {len(layer.weights)}")
            (table,) = layer.weights
            n, d = int(cfg["input_dim"]), int(cfg["output_dim"])
            if table.shape != (n, d):
                raise _shape_error(layer, "the embeddings", table.shape, (n, d))
            if cfg.get("mask_zero") and k != 0:
                raise ConversionError(f"{layer.where} has mask_zero=True but is not the first "
                                      f"layer: elman masks by the model's input values")
            _training_only(layer, cfg, notes)
            module = Embedding(n, d, dtype=dt, seed=0)
            module.load_state_dict({"weight": table.astype(dt)})
            out.append(module)
            features = d
        elif cls == "Dense":
            dt = _check_dtype(layer, cfg, layer.weights, dtype)
            act = _act_name(cfg.get("activation"))
            if act not in _ACTIVATION_LAYERS:
                raise ConversionError(
                    f"{layer.where} has activation={_act_repr(cfg.get('activation'))}: elman's "
                    f"Dense has {', '.join(_ACTIVATION_LAYERS)}")
            use_bias = cfg.get("use_bias", True)
            if len(layer.weights) != (2 if use_bias else 1):
                raise ConversionError(f"{layer.where}: expected {2 if use_bias else 1} weight "
                                      f"arrays, got {len(layer.weights)}")
            kernel = layer.weights[0]
            units = int(cfg["units"])
            if kernel.ndim != 2 or kernel.shape[1] != units:
                raise _shape_error(layer, "the kernel", kernel.shape, f"(in_features, {units})")
            if features is not None and kernel.shape[0] != features:
                raise ConversionError(f"{layer.where}: its kernel takes {kernel.shape[0]} input "
                                      f"features but the previous layer gives {features}")
            _training_only(layer, cfg, notes)
            module = Dense(kernel.shape[0], units, bias=bool(use_bias), activation=act,
                           dtype=dt, seed=0)
            state = {"weight": np.ascontiguousarray(kernel.T, dtype=dt)}
            if use_bias:
                if layer.weights[1].shape != (units,):
                    raise _shape_error(layer, "the bias", layer.weights[1].shape, (units,))
                state["bias"] = layer.weights[1].astype(dt)
            module.load_state_dict(state)
            out.append(module)
            features = units
        elif cls == "Dropout":
            if cfg.get("noise_shape") is not None:
                notes.append(
                    f"{layer.where}: noise_shape={cfg['noise_shape']!r} (one mask shared along "
                    f"some axes) acts only in training and elman's Dropout has no counterpart; "
                    f"the converted model predicts the same, but training it in elman drops "
                    f"elements independently")
            out.append(Dropout(float(cfg.get("rate", 0.5)), seed=cfg.get("seed")))
        elif cls == "Activation":
            act = _act_name(cfg.get("activation"))
            if act not in _ACTIVATION_LAYERS:
                raise ConversionError(
                    f"{layer.where} has activation={_act_repr(cfg.get('activation'))}: elman "
                    f"has {', '.join(_ACTIVATION_LAYERS)}")
            if _ACTIVATION_LAYERS[act] is not None:
                out.append(_ACTIVATION_LAYERS[act]())
        elif cls == "Masking":
            if k != 0:
                raise ConversionError(
                    f"{layer.where} is not the first layer: Keras then masks by the values the "
                    f"layers before it compute, while elman masks by the model's input values "
                    f"(predict(x, mask_value=...)); move it first")
        else:                        # pragma: no cover - the readers refuse these first
            raise ConversionError(f"{layer.where}: not a layer type elman can convert. "
                                  f"Supported: {_supported()}")
    if not out:
        raise ConversionError("the model has no layers to convert")
    model = Sequential(out)
    model.eval()
    return model
