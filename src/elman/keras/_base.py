"""What every layer of the Keras face shares: session state (layer names, the random generator
that initialises weights), Keras' initialisers by name, and the :class:`Layer` base class.

A face layer keeps its parameters in **Keras' layout** (``kernel`` (I, k*units),
``recurrent_kernel`` (units, k*units), ``bias``, ``embeddings``), so ``get_weights()`` and
``set_weights()`` exchange arrays with real Keras unchanged. The computing is done by the elman
layer it holds in ``layer.engine`` (PyTorch's layout): the face copies its parameters into the
engine before a forward pass and adds the engine's gradients, mapped back, after a backward
pass. The engine's own parameters are not the model's (``named_parameters()`` leaves them out),
so the optimizer and ``summary()`` see exactly Keras' parameters.
"""
from __future__ import annotations

import re

import numpy as np

from .. import _validate
from .. import model as _model
from ..init import orthogonal_, uniform_, zeros_
from ..module import Module, Param

__all__ = ["Layer", "LAYERS", "register", "from_spec", "clear_session", "set_random_seed",
           "get_initializer", "to_snake_case"]

#: class name -> layer class, filled by :func:`register` where each layer is defined; what a
#: saved model's layers are rebuilt from (:func:`elman.keras.models.load_model`)
LAYERS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: list a layer class in :data:`LAYERS`."""
    LAYERS[cls.__name__] = cls
    return cls


def from_spec(spec):
    """A layer from ``{"class": name, "config": kwargs}`` (a layer is returned as is)."""
    if not isinstance(spec, dict):
        return spec
    if set(spec) != {"class", "config"} or spec["class"] not in LAYERS:
        raise ValueError(f"expected a layer or {{'class': one of {sorted(LAYERS)}, 'config': "
                         f"{{...}}}}, got {spec!r}")
    return LAYERS[spec["class"]](**spec["config"])


# -- session state: names and the weight generator -------------------------------------------

_names: dict[str, int] = {}
_session = {"rng": np.random.default_rng()}


def clear_session() -> None:
    """Forget the layer names handed out so far (the next ``SimpleRNN`` is ``simple_rnn``
    again), as ``keras.backend.clear_session()`` does."""
    _names.clear()


def set_random_seed(seed: int) -> None:
    """Seed the generator that initialises weights and seeds dropout and shuffling, so a script
    builds and trains the same model every run (``keras.utils.set_random_seed``). NumPy's global
    generator is seeded too, as Keras does."""
    seed = _validate.positive_int("seed", seed, minimum=0)
    _session["rng"] = np.random.default_rng(seed)
    np.random.seed(seed % 2**32)


def session_rng() -> np.random.Generator:
    return _session["rng"]


def draw_seed() -> int:
    """A seed for a generator of its own (dropout masks, shuffling), from the session."""
    return int(session_rng().integers(2**31))


def to_snake_case(name: str) -> str:
    """``"SimpleRNN"`` -> ``"simple_rnn"``, ``"TimeDistributed"`` -> ``"time_distributed"``
    (Keras' rule)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(prefix: str) -> str:
    """``prefix`` the first time, then ``prefix_1``, ``prefix_2``, ... (per session)."""
    count = _names.get(prefix, 0)
    _names[prefix] = count + 1
    return prefix if count == 0 else f"{prefix}_{count}"


# -- initialisers (Keras' names; shapes in Keras' layout, (fan_in, fan_out) for matrices) -------

def _fans(shape) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    return shape[0], shape[0]


def _scaled_uniform(scale):
    return lambda a, rng: uniform_(a, float(np.sqrt(scale(*_fans(a.shape)))), rng)


INITIALIZERS = {
    "zeros": zeros_,
    "ones": lambda a, rng: np.copyto(a, 1) or a,
    "random_uniform": lambda a, rng: uniform_(a, 0.05, rng),     # Keras: U(-0.05, 0.05)
    "glorot_uniform": _scaled_uniform(lambda fi, fo: 6.0 / (fi + fo)),
    "he_uniform": _scaled_uniform(lambda fi, fo: 6.0 / fi),
    "lecun_uniform": _scaled_uniform(lambda fi, fo: 3.0 / fi),
    "orthogonal": lambda a, rng: orthogonal_(a, rng),
}
INITIALIZERS["uniform"] = INITIALIZERS["random_uniform"]


def get_initializer(name: str, what: str):
    """The initialiser ``fn(array, rng)`` for a Keras name (``"glorot_uniform"``,
    ``"GlorotUniform"``, ...); ``what`` names the argument in errors."""
    key = to_snake_case(name) if isinstance(name, str) else None
    if key not in INITIALIZERS:
        raise ValueError(f"{what} must be one of {sorted(INITIALIZERS)} (Keras' names of the "
                         f"initialisers elman has), got {name!r}")
    return INITIALIZERS[key]


# -- the base class ----------------------------------------------------------------------------

class Layer(Module):
    """A Keras-style layer: a name, a lazy ``build(input_shape)`` that creates the weights once
    the input's feature size is known, ``compute_output_shape``, ``get_weights``/``set_weights``
    in Keras' order, and elman's ``forward``/``backward`` (samples-first arrays).

    Sub-classes create their weights in ``build``, in Keras' order (``_add_weight``), and set
    ``engine``, the elman module that computes. ``_sequence_effect`` tells the model whether
    the layer outputs a sequence ("seq"), turns one into a vector ("pick") or keeps what it
    gets (None).
    """

    _sequence_effect = None

    def __init__(self, name=None, dtype=None, input_shape=None):
        super().__init__()
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self.name = name if name is not None else unique_name(to_snake_case(type(self).__name__))
        self.dtype = _validate.float_dtype(np.float32 if dtype is None else dtype)
        self.built = False
        self.engine = None
        self._batch_input_shape = None
        if input_shape is not None:
            self._batch_input_shape = (None,) + _shape_tuple("input_shape", input_shape)
        object.__setattr__(self, "training", False)     # as Keras: no dropout outside fit()

    def __call__(self, *args, training=None, **kwargs):
        """``layer(x)``: the forward pass; ``training=True`` applies dropout (Keras' flag; a
        model's ``fit`` sets it for its layers)."""
        if training is None:
            return self.forward(*args, **kwargs)
        was_training = self.training
        self.train(bool(training))
        try:
            return self.forward(*args, **kwargs)
        finally:
            self.train(was_training)

    # -- parameters: the face's own, never the engine's ------------------------------------
    def named_parameters(self, prefix: str = ""):
        for name, param in self._params.items():
            yield (f"{prefix}.{name}" if prefix else name), param
        for name, module in self._modules.items():
            if name != "engine":
                yield from module.named_parameters(f"{prefix}.{name}" if prefix else name)

    def _add_weight(self, name: str, shape, initializer):
        """A parameter in Keras' layout, initialised by a Keras initialiser name."""
        init = get_initializer(initializer, f"{type(self).__name__}: {name}_initializer") \
            if isinstance(initializer, str) else initializer
        array = np.zeros(shape, self.dtype)
        init(array, session_rng())
        setattr(self, name, Param(array))

    # -- Keras' interface ------------------------------------------------------------------
    def build(self, input_shape) -> None:
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    # Keras' order is the order the weights were created in, as for a model
    get_weights = _model.Sequential.get_weights
    set_weights = _model.Sequential.set_weights

    @property
    def weights(self) -> list:
        return self.get_weights()

    def count_params(self) -> int:
        return sum(p.data.size for p in self.parameters())

    def get_config(self) -> dict:
        """The constructor arguments, as plain JSON-able values."""
        return {"name": self.name, "dtype": self.dtype.name}

    def config(self) -> dict:
        """What :func:`elman.save` stores to rebuild the layer (``get_config()``)."""
        return self.get_config()

    def spec(self) -> dict:
        return {"class": type(self).__name__, "config": self.get_config()}

    def _require_built(self, x) -> None:
        """Build from the first input a layer is called on directly."""
        if not self.built:
            self.build((None,) + tuple(np.shape(x)[1:]))

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def _shape_tuple(what: str, shape) -> tuple:
    """A sample's shape: a tuple of positive ints or None (unknown size)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{what} must be a tuple such as (None, 32), got {shape!r}")
    out = []
    for s in shape:
        if s is None:
            out.append(None)
        else:
            out.append(_validate.positive_int(f"{what} entries", s))
    return tuple(out)
