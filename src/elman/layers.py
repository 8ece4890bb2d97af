"""The non-recurrent layers: Linear/Dense, Embedding, Dropout, LayerNorm, activations and the
sequence pickers that turn an RNN's output sequence into one vector per sequence.

Every layer follows the same contract as the recurrent ones: ``layer(x, ...)`` runs ``forward``,
which keeps what ``backward`` needs in ``self._cache``; ``layer.backward(grad_out)`` returns the
gradient wrt the input and *adds* the parameter gradients into ``Param.grad``. Each forward sits
right above its backward. Parameters are named like PyTorch's (``weight``, ``bias``), so
``layer.load_state_dict({k: v.numpy() for k, v in torch_layer.state_dict().items()})`` works.

Shapes use ``*`` for "any leading dimensions": a Linear applies to (N, F), to (F,), and to
sequences (T, N, F) or (N, T, F) alike.

A forward pass keeps references to (views of) its input and output rather than copies: do not
modify either in place between ``forward`` and ``backward``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _validate, registry, threads
from .init import uniform_
from .module import Module, Param

__all__ = [
    "Linear", "Dense", "Embedding", "Dropout", "LayerNorm",
    "Tanh", "Sigmoid", "ReLU", "Softmax", "LogSoftmax",
    "Last", "LastBidirectional", "MeanPool",
    "ACTIVATIONS", "activation_forward", "activation_backward",
]


# -- shared checks ---------------------------------------------------------------------------

def _saved(module: Module):
    """What the last forward saved; a clear error if there was no forward."""
    cache = module._cache
    if cache is None:
        raise RuntimeError(
            f"{type(module).__name__}.backward called before forward: call the module on an "
            f"input first (backward uses what that forward pass saved; a forward under "
            f"elman.no_grad() saves nothing)")
    return cache


def _grad_array(module: Module, grad_out, shape: tuple, dtype) -> np.ndarray:
    """``grad_out`` as an array of the last output's shape and dtype."""
    g = np.asarray(grad_out)
    if g.dtype.kind not in "fiub":
        raise TypeError(f"{type(module).__name__}.backward: grad_out must hold real numbers, "
                        f"got an array of dtype {g.dtype}")
    if g.shape != tuple(shape):
        raise ValueError(
            f"{type(module).__name__}.backward: expected grad_out of shape {tuple(shape)} (the "
            f"shape of the last forward's output), got {g.shape}")
    return g.astype(dtype, copy=False)


def _float_input(module: Module, x) -> np.ndarray:
    """Input of a parameter-free layer: float32/float64 kept as they are, integers and booleans
    promoted to float64 (float16 to float32)."""
    arr = np.asarray(x)
    if arr.dtype in _validate.FLOAT_DTYPES:
        return arr
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{type(module).__name__}: input must hold real numbers, got an array "
                        f"of dtype {arr.dtype}")
    small_float = arr.dtype.kind == "f" and arr.dtype.itemsize < 4
    return arr.astype(np.float32 if small_float else np.float64)


# -- activations: the math, written once -----------------------------------------------------
# Each forward may write into ``out`` (the Linear passes its fresh pre-activation so no extra
# array is allocated); each backward takes the *output* y of the forward, never recomputing it.

def _identity(z, axis=-1, out=None):
    if out is not None and out is not z:
        out[...] = z
        return out
    return z


def _identity_backward(y, dy, axis=-1):
    return dy


def _tanh(z, axis=-1, out=None):
    return np.tanh(z, out=out)


def _tanh_backward(y, dy, axis=-1):
    # d tanh(z)/dz = 1 - y^2
    d = np.multiply(y, y)
    np.subtract(1, d, out=d)
    d *= dy
    return d


def _sigmoid(z, axis=-1, out=None):
    # exp(-|z|) lies in (0, 1], so nothing overflows: sigma(z) = 1/(1+e) for z >= 0 and
    # e/(1+e) for z < 0, both exact where the other form would round to 0 or overflow.
    e = np.exp(-np.abs(z))
    num = np.where(z >= 0, np.ones((), e.dtype), e)
    e += 1
    return np.divide(num, e, out=out)


def _sigmoid_backward(y, dy, axis=-1):
    # d sigma(z)/dz = y (1 - y)
    d = np.subtract(1, y)
    d *= y
    d *= dy
    return d


def _relu(z, axis=-1, out=None):
    return np.maximum(z, 0, out=out)


def _relu_backward(y, dy, axis=-1):
    # y > 0 exactly where z > 0; the derivative at 0 is taken as 0, as PyTorch does
    return np.where(y > 0, dy, np.zeros((), dy.dtype))


def _softmax(z, axis=-1, out=None):
    # softmax is shift-invariant: subtracting the max keeps exp() from overflowing
    e = np.subtract(z, np.max(z, axis=axis, keepdims=True), out=out)
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def _softmax_backward(y, dy, axis=-1):
    # dz = y * (dy - <dy, y>) along axis (Jacobian diag(y) - y y^T applied to dy)
    d = np.multiply(dy, y)
    dot = np.sum(d, axis=axis, keepdims=True)
    d -= y * dot
    return d


def _log_softmax(z, axis=-1, out=None):
    s = np.subtract(z, np.max(z, axis=axis, keepdims=True), out=out)
    s -= np.log(np.sum(np.exp(s), axis=axis, keepdims=True))
    return s


def _log_softmax_backward(y, dy, axis=-1):
    # y = z - logsumexp(z): dz = dy - softmax(z) * sum(dy), with softmax(z) = exp(y)
    d = np.exp(y)
    d *= -np.sum(dy, axis=axis, keepdims=True)
    d += dy
    return d


#: name -> (forward(z, axis, out), backward(y, dy, axis)); ``None`` means "linear".
ACTIVATIONS = {
    "linear": (_identity, _identity_backward),
    "tanh": (_tanh, _tanh_backward),
    "sigmoid": (_sigmoid, _sigmoid_backward),
    "relu": (_relu, _relu_backward),
    "softmax": (_softmax, _softmax_backward),
    "log_softmax": (_log_softmax, _log_softmax_backward),
}


def _activation_name(activation) -> str:
    if activation is None:
        return "linear"
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return activation.lower()
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or None, got "
                     f"{activation!r}")


def activation_forward(name, z: np.ndarray, axis: int = -1, out=None) -> np.ndarray:
    """``act(z)`` for an activation name (``None`` = linear); ``out=z`` computes in place.

    >>> activation_forward("relu", np.array([-1.0, 2.0]))
    array([0., 2.])
    """
    return ACTIVATIONS[_activation_name(name)][0](z, axis=axis, out=out)


def activation_backward(name, y: np.ndarray, dy: np.ndarray, axis: int = -1) -> np.ndarray:
    """``dL/dz`` from the activation's output ``y = act(z)`` and ``dL/dy``.

    >>> y = activation_forward("tanh", np.array([0.0]))
    >>> activation_backward("tanh", y, np.array([2.0]))
    array([2.])
    """
    return ACTIVATIONS[_activation_name(name)][1](y, dy, axis=axis)


class _Activation(Module):
    """An activation as a module: forward saves its output y, backward uses only y."""

    _name = "linear"

    def __init__(self):
        super().__init__()
        self.dim = -1                   # only softmax and log-softmax look at it
        self._cache = None

    def forward(self, x):
        x = _float_input(self, x)
        y = ACTIVATIONS[self._name][0](x, axis=self.dim)
        self._save_for_backward(y)
        return y

    def backward(self, grad_out):
        y = _saved(self)
        dy = _grad_array(self, grad_out, y.shape, y.dtype)
        return ACTIVATIONS[self._name][1](y, dy, axis=self.dim)

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values (none for element-wise ones)."""
        return {}


class _RowActivation(_Activation):
    """An activation over one dimension (softmax, log-softmax)."""

    def __init__(self, dim: int = -1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"dim must be an int, got {dim!r}")
        self.dim = int(dim)

    def forward(self, x):
        ndim = np.ndim(x)
        if not -ndim <= self.dim < ndim:
            raise ValueError(f"{type(self).__name__}: dim={self.dim} is out of range for an "
                             f"input with {ndim} dimensions (shape {np.shape(x)})")
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def config(self) -> dict:
        return {"dim": self.dim}


@registry.register("module")
class Tanh(_Activation):
    """``y = tanh(x)``, element-wise; ``dx = dy * (1 - y^2)``. Any shape."""

    _name = "tanh"


@registry.register("module")
class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``, element-wise, computed without overflow for any x;
    ``dx = dy * y * (1 - y)``. Any shape.

    >>> Sigmoid()(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """

    _name = "sigmoid"


@registry.register("module")
class ReLU(_Activation):
    """``y = max(x, 0)``, element-wise; the derivative at 0 is 0 (as in PyTorch). Any shape."""

    _name = "relu"


@registry.register("module")
class Softmax(_RowActivation):
    """``y_i = exp(x_i) / sum_j exp(x_j)`` along ``dim`` (default: the last);
    ``dx = y * (dy - sum(dy * y))``. Any shape.

    >>> Softmax()(np.zeros((2, 4)))[0]
    array([0.25, 0.25, 0.25, 0.25])
    """

    _name = "softmax"


@registry.register("module")
class LogSoftmax(_RowActivation):
    """``y_i = x_i - log sum_j exp(x_j)`` along ``dim`` (default: the last), computed stably;
    ``dx = dy - exp(y) * sum(dy)``. Pairs with a negative log-likelihood loss. Any shape."""

    _name = "log_softmax"


# -- Linear ----------------------------------------------------------------------------------

@registry.register("module")
class Linear(Module):
    """Affine map with an optional activation (Keras' ``Dense(units, activation=...)``).

    ``y = act(x W^T + b)``

    Shapes: ``x`` (*, in_features) -> ``y`` (*, out_features), for any leading dimensions,
    including none (a single vector (F,)) and sequences (T, N, F) or (N, T, F): the leading
    dimensions are flattened into one (a view, no copy for a contiguous input), so the weight
    gradient is a single GEMM over all of them.

    Parameters (PyTorch's names and shapes): ``weight`` (out_features, in_features), ``bias``
    (out_features,) when ``bias=True``. Initialised as in PyTorch: both uniform in
    ``+-1/sqrt(in_features)`` (``kaiming_uniform_(a=sqrt(5))`` for the weight).

    ``activation``: ``None``/``"linear"``, ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"softmax"``
    or ``"log_softmax"`` (the last two over the last dimension).

    Backward: ``dz = act'(y) dy``; ``dW += dz^T x``, ``db += sum(dz)``, ``dx = dz W``.

    >>> layer = Linear(8, 3, activation="tanh", seed=0)
    >>> y = layer(np.ones((5, 4, 8), dtype=np.float32))    # (T, N, F) sequence
    >>> y.shape, y.dtype
    ((5, 4, 3), dtype('float32'))
    >>> layer.backward(np.ones_like(y)).shape
    (5, 4, 8)
    >>> [name for name, _ in layer.named_parameters()]
    ['weight', 'bias']
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str | None = None, dtype=np.float32, seed=None):
        super().__init__()
        self.in_features = _validate.positive_int("in_features", in_features)
        self.out_features = _validate.positive_int("out_features", out_features)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.activation = _activation_name(activation)
        self.dtype = _validate.float_dtype(dtype)
        _validate.affordable(type(self).__name__,
                             (self.in_features + bool(bias)) * self.out_features,
                             self.dtype, {"in_features": self.in_features,
                                          "out_features": self.out_features})
        rng = _validate.rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Param(uniform_(np.empty((self.out_features, self.in_features), self.dtype),
                                     bound, rng))
        self.bias = Param(uniform_(np.empty(self.out_features, self.dtype), bound, rng)) \
            if bias else None
        self._cache = None

    def forward(self, x):
        x = _validate.float_array("input", x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            got = x.shape[-1] if x.ndim else "a scalar"
            raise ValueError(
                f"Linear: expected input with last dimension {self.in_features} (in_features), "
                f"got {got} (input shape {x.shape})")
        x2 = x.reshape(-1, self.in_features)               # a view of a contiguous input
        # (M, out); threads.matmul: one thread pool at a time, so that OpenBLAS's worker does
        # not spin beside a recurrent layer's row blocks or directions that run next
        z = threads.matmul(x2, self.weight.data.T)
        if self.bias is not None:
            z += self.bias.data
        y = ACTIVATIONS[self.activation][0](z, out=z)        # in place: z is ours
        self._save_for_backward((x2, y, x.shape))
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, grad_out):
        x2, y, x_shape = _saved(self)
        dy = _grad_array(self, grad_out, x_shape[:-1] + (self.out_features,), self.dtype)
        dz = ACTIVATIONS[self.activation][1](y, dy.reshape(y.shape))    # through the activation
        # one GEMM over all leading dims, added into the gradient as it runs
        threads.matmul(dz.T, x2, self.weight.grad, accumulate=True)
        if self.bias is not None:
            self.bias.grad += dz.sum(axis=0)
        return threads.matmul(dz, self.weight.data).reshape(x_shape)

    def extra_repr(self) -> str:
        act = "" if self.activation == "linear" else f", activation={self.activation!r}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}{act}, dtype={self.dtype}")

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values (``seed`` is not kept)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "activation": self.activation,
                "dtype": self.dtype.name}


Dense = Linear


# -- Embedding -------------------------------------------------------------------------------

@registry.register("module")
class Embedding(Module):
    """A lookup table: ``y[..., :] = weight[x[...], :]``.

    Shapes: integer indices ``x`` of any shape (e.g. (T, N) or (N, T)) -> ``y`` of shape
    ``x.shape + (embedding_dim,)``. Parameter ``weight`` (num_embeddings, embedding_dim),
    initialised N(0, 1) as in PyTorch; row ``padding_idx`` (if given; negative counts from the
    end) is zero and never receives a gradient, so it stays zero under training.

    Backward scatter-adds ``dy`` into the rows that were looked up (a row used k times gets the
    sum of its k gradients) and returns ``None``: there is no gradient wrt integer indices.

    >>> emb = Embedding(10, 4, padding_idx=0, seed=0)
    >>> tokens = np.array([[1, 2, 0], [3, 0, 0]])     # (N, T), 0 = padding
    >>> y = emb(tokens)
    >>> y.shape, float(np.abs(y[1, 2]).sum())
    ((2, 3, 4), 0.0)
    >>> emb.backward(np.ones_like(y)) is None, float(emb.weight.grad[0].sum())
    (True, 0.0)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype=np.float32, seed=None):
        super().__init__()
        self.num_embeddings = _validate.positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _validate.positive_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral) \
                    or not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(
                    f"padding_idx must be None or an integer in [{-self.num_embeddings}, "
                    f"{self.num_embeddings - 1}] (within num_embeddings), got {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.dtype = _validate.float_dtype(dtype)
        _validate.affordable("Embedding", self.num_embeddings * self.embedding_dim, self.dtype,
                             {"num_embeddings": self.num_embeddings,
                              "embedding_dim": self.embedding_dim})
        rng = _validate.rng(seed)
        weight = rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.weight = Param(weight)
        self._cache = None

    def forward(self, x):
        idx = np.asarray(x)
        if idx.dtype.kind not in "iu":
            raise TypeError(
                f"Embedding: input must hold integer indices, got an array of dtype {idx.dtype} "
                f"(convert token ids with .astype(np.int64))")
        if idx.size:
            lo, hi = idx.min(), idx.max()
            if lo < 0 or hi >= self.num_embeddings:
                bad = lo if lo < 0 else hi
                where = tuple(int(i) for i in np.argwhere(idx == bad)[0])
                raise IndexError(
                    f"Embedding: index out of range: expected indices in [0, "
                    f"{self.num_embeddings - 1}] (num_embeddings={self.num_embeddings}), got "
                    f"{int(bad)} at position {where}")
        idx = idx.astype(np.intp, copy=False)
        self._save_for_backward(idx)
        return np.take(self.weight.data, idx, axis=0)

    def backward(self, grad_out):
        idx = _saved(self)
        dy = _grad_array(self, grad_out, idx.shape + (self.embedding_dim,), self.dtype)
        grad = self.weight.grad
        if self.padding_idx is not None:
            keep = grad[self.padding_idx].copy()
        # unbuffered scatter-add: repeated indices accumulate (fast in NumPy >= 1.25)
        np.add.at(grad, idx.reshape(-1), dy.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            grad[self.padding_idx] = keep                    # the padding row learns nothing
        return None

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}, dtype={self.dtype}"

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values (``seed`` is not kept)."""
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "dtype": self.dtype.name}


# -- Dropout ---------------------------------------------------------------------------------

@registry.register("module")
class Dropout(Module):
    """Inverted dropout: in training mode each element is zeroed with probability ``p`` and the
    survivors are scaled by ``1/(1-p)``, so the expected output equals the input; in evaluation
    mode (``module.eval()``) it is the identity. ``p=1`` gives zeros.

    ``y = x * m``, ``m_i = Bernoulli(1-p) / (1-p)``; backward reuses the same mask:
    ``dx = dy * m``. Any shape; the output keeps a float32/float64 input's dtype.

    The generator lives in ``self._rng`` (seeded by ``seed``), which ``gradcheck`` replays.

    >>> drop = Dropout(0.5, seed=0)
    >>> y = drop(np.ones(8))
    >>> sorted(set(y.tolist())) == [0.0, 2.0]
    True
    >>> drop.eval()(np.ones(3))
    array([1., 1., 1.])
    """

    def __init__(self, p: float = 0.5, seed=None):
        super().__init__()
        self.p = _validate.probability("p", p)
        self._rng = _validate.rng(seed)
        self._cache = None

    def forward(self, x):
        x = _float_input(self, x)
        if not self.training or self.p == 0.0:
            self._save_for_backward((None, x.shape))         # identity: no mask
            return x
        if self.p == 1.0:
            mask = np.zeros(x.shape, x.dtype)
        else:
            # keep where u >= p (probability 1 - p); scale the kept ones by 1/(1-p)
            mask = self._rng.random(x.shape, dtype=x.dtype) >= self.p
            mask = mask.astype(x.dtype)
            mask *= 1.0 / (1.0 - self.p)
        self._save_for_backward((mask, x.shape))
        return x * mask

    def backward(self, grad_out):
        mask, shape = _saved(self)
        dy = np.asarray(grad_out)
        if dy.shape != shape:
            raise ValueError(
                f"Dropout.backward: expected grad_out of shape {shape} (the shape of the last "
                f"forward's output), got {dy.shape}")
        return dy if mask is None else dy * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values. ``seed`` is not kept: a
        checkpoint stores the generator's state itself."""
        return {"p": self.p}


# -- LayerNorm -------------------------------------------------------------------------------

@registry.register("module")
class LayerNorm(Module):
    """Layer normalisation over the last ``len(normalized_shape)`` dimensions, as PyTorch's.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the mean and the biased variance
    taken over the normalised dimensions of each sample.

    Shapes: ``x`` (*, *normalized_shape) -> ``y`` of the same shape. Parameters ``weight`` and
    ``bias`` of shape ``normalized_shape`` (ones and zeros), present when
    ``elementwise_affine`` (``bias`` also needs ``bias=True``).

    Backward, with ``xhat = (x - mean) * rstd`` and ``g = dy * weight`` (K normalised elements):
    ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``, ``dweight += sum(dy * xhat)``,
    ``dbias += sum(dy)`` over the leading dimensions.

    >>> ln = LayerNorm(4, dtype=np.float64)
    >>> y = ln(np.array([[1.0, 2.0, 3.0, 4.0]]))
    >>> bool(abs(y.mean()) < 1e-12), round(float(y.std()), 4)
    (True, 1.0)
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype=np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
            else tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else None
        if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                            for s in shape):
            raise ValueError(f"normalized_shape must be a positive integer or a non-empty tuple "
                             f"of positive integers, got {normalized_shape!r}")
        self.normalized_shape = tuple(int(s) for s in shape)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
            raise ValueError(f"eps must be a positive finite number, got {eps!r}")
        self.eps = float(eps)
        self.elementwise_affine = _validate.flag("elementwise_affine", elementwise_affine)
        self.dtype = _validate.float_dtype(dtype)
        if self.elementwise_affine:
            _validate.affordable("LayerNorm", math.prod(self.normalized_shape) * (1 + bool(bias)),
                                 self.dtype, {"normalized_shape": normalized_shape})
        self.weight = Param(np.ones(self.normalized_shape, self.dtype)) \
            if self.elementwise_affine else None
        self.bias = Param(np.zeros(self.normalized_shape, self.dtype)) \
            if self.elementwise_affine and bias else None
        self._cache = None

    def forward(self, x):
        x = _validate.float_array("input", x, self.dtype)
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(
                f"LayerNorm: expected input whose last dimension(s) are {self.normalized_shape} "
                f"(normalized_shape), got input of shape {x.shape}")
        x2 = x.reshape(-1, math.prod(self.normalized_shape))
        xhat = x2 - x2.mean(axis=1, keepdims=True)
        var = np.einsum("ij,ij->i", xhat, xhat)[:, None] / xhat.shape[1]   # biased, as PyTorch
        rstd = 1.0 / np.sqrt(var + self.eps)
        xhat *= rstd
        y = xhat
        if self.weight is not None:
            y = xhat * self.weight.data.reshape(-1)
        if self.bias is not None:
            y += self.bias.data.reshape(-1)
        self._save_for_backward((xhat, rstd, x.shape))
        return y.reshape(x.shape)

    def backward(self, grad_out):
        xhat, rstd, shape = _saved(self)
        dy = _grad_array(self, grad_out, shape, self.dtype).reshape(xhat.shape)
        g = dy
        if self.weight is not None:
            self.weight.grad += np.einsum("ij,ij->j", dy, xhat).reshape(self.normalized_shape)
            g = dy * self.weight.data.reshape(-1)             # d/dxhat
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0).reshape(self.normalized_shape)
        # through xhat = (x - mean) * rstd, mean and rstd themselves depending on x
        dx = g - g.mean(axis=1, keepdims=True)
        dx -= xhat * (np.einsum("ij,ij->i", g, xhat)[:, None] / xhat.shape[1])
        dx *= rstd
        return dx.reshape(shape)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}, "
                f"dtype={self.dtype}")

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values."""
        return {"normalized_shape": list(self.normalized_shape), "eps": self.eps,
                "elementwise_affine": self.elementwise_affine,
                "bias": self.bias is not None or not self.elementwise_affine,
                "dtype": self.dtype.name}


# -- sequence pickers ------------------------------------------------------------------------

class _SequencePicker(Module):
    """Shared input handling: a batched sequence (T, N, F) / (N, T, F) or an unbatched (T, F)."""

    def __init__(self, batch_first: bool = False):
        super().__init__()
        if not isinstance(batch_first, (bool, np.bool_)):
            raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
        self.batch_first = _validate.flag("batch_first", batch_first)
        self._cache = None

    def _time_major(self, x, lengths):
        """(x, a time-major (T, N, F) view of it, lengths or None, unbatched?)."""
        x = _float_input(self, x)
        name = type(self).__name__
        if x.ndim == 2:                         # unbatched (T, F); batch_first does not apply
            if lengths is not None:
                raise ValueError(f"{name}: lengths needs a batched 3-D input, got an unbatched "
                                 f"input of shape {x.shape}")
            xt, unbatched = x[:, None, :], True
        elif x.ndim == 3:
            xt, unbatched = (x.swapaxes(0, 1) if self.batch_first else x), False
        else:
            layout = "(N, T, F)" if self.batch_first else "(T, N, F)"
            raise ValueError(f"{name}: expected a sequence of shape {layout} or (T, F), got "
                             f"input of shape {x.shape}")
        steps, batch = xt.shape[:2]
        if steps == 0:
            raise ValueError(f"{name}: the input has no time steps (shape {x.shape})")
        if lengths is not None:
            lengths = _validate.lengths(lengths, batch, steps, type(self).__name__)
        return x, xt, lengths, unbatched

    def _grad_input(self, shape, dtype):
        """Zeros of the input's shape and a time-major view of them to scatter into."""
        dx = np.zeros(shape, dtype)
        if len(shape) == 2:
            return dx, dx[:, None, :]
        return dx, (dx.swapaxes(0, 1) if self.batch_first else dx)

    def extra_repr(self) -> str:
        return f"batch_first={self.batch_first}"

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values."""
        return {"batch_first": self.batch_first}


@registry.register("module")
class Last(_SequencePicker):
    """Each sequence's last valid step: many-to-one after a recurrent layer.

    ``y[n] = x[lengths[n] - 1, n]`` (time-major), or ``x[T - 1, n]`` without ``lengths``.

    Shapes: ``x`` (T, N, F), or (N, T, F) with ``batch_first``, or unbatched (T, F);
    ``lengths`` N integers in 1..T (right-padded sequences) -> ``y`` (N, F) (or (F,)).
    Backward scatters ``dy`` into zeros of the input's shape.

    For a bidirectional RNN's output this takes the last valid step of the *whole* vector, so the
    reverse half is the reverse direction's state after only one step. Keras'
    ``Bidirectional(..., return_sequences=False)`` instead concatenates the forward direction's
    last step and the reverse direction's final state, found at step 0 — that is
    :class:`LastBidirectional` (and equals PyTorch's ``h_n`` of the last layer).

    >>> x = np.arange(12.0).reshape(3, 2, 2)          # (T=3, N=2, F=2)
    >>> Last()(x, lengths=[3, 1])
    array([[8., 9.],
           [2., 3.]])
    """

    def forward(self, x, lengths=None):
        x, xt, lengths, unbatched = self._time_major(x, lengths)
        steps, batch = xt.shape[:2]
        t = np.full(batch, steps - 1, np.intp) if lengths is None else lengths - 1
        n = np.arange(batch)
        y = xt[t, n]                                           # (N, F), a copy
        self._save_for_backward((t, n, x.shape, x.dtype))
        return y[0] if unbatched else y

    def backward(self, grad_out):
        t, n, shape, dtype = _saved(self)
        out_shape = (shape[-1],) if len(shape) == 2 else (len(n), shape[-1])
        dy = _grad_array(self, grad_out, out_shape, dtype)
        dx, dxt = self._grad_input(shape, dtype)
        dxt[t, n] = dy.reshape(len(n), -1)                     # (t, n) pairs are distinct
        return dx


@registry.register("module")
class LastBidirectional(_SequencePicker):
    """The many-to-one summary of a bidirectional RNN's output, as Keras'
    ``Bidirectional(..., return_sequences=False)`` returns (and as PyTorch's last-layer ``h_n``
    holds): the forward half at each sequence's last valid step, the reverse half at step 0
    (where the reverse direction, which runs from the last valid step back to the first, ends).

    ``y[n] = concat(x[lengths[n] - 1, n, :H], x[0, n, H:])`` (time-major), ``H = hidden_size``.

    Shapes: ``x`` (T, N, 2H), or (N, T, 2H) with ``batch_first``, or unbatched (T, 2H);
    ``lengths`` N integers in 1..T -> ``y`` (N, 2H) (or (2H,)). ``hidden_size`` is the width of
    one direction's output (``proj_size`` for a projected LSTM).

    >>> x = np.arange(12.0).reshape(3, 2, 2)          # (T=3, N=2, 2H=2)
    >>> LastBidirectional(1)(x, lengths=[3, 2])
    array([[8., 1.],
           [6., 3.]])
    """

    def __init__(self, hidden_size: int, batch_first: bool = False):
        super().__init__(batch_first)
        self.hidden_size = _validate.positive_int("hidden_size", hidden_size)

    def forward(self, x, lengths=None):
        x, xt, lengths, unbatched = self._time_major(x, lengths)
        steps, batch, features = xt.shape
        H = self.hidden_size
        if features != 2 * H:
            raise ValueError(
                f"LastBidirectional: expected input with last dimension {2 * H} "
                f"(2 * hidden_size, forward and reverse halves), got {features}")
        t = np.full(batch, steps - 1, np.intp) if lengths is None else lengths - 1
        n = np.arange(batch)
        y = np.empty((batch, 2 * H), x.dtype)
        y[:, :H] = xt[t, n, :H]                                # forward: last valid step
        y[:, H:] = xt[0, :, H:]                                # reverse: its final state, step 0
        self._save_for_backward((t, n, x.shape, x.dtype))
        return y[0] if unbatched else y

    def backward(self, grad_out):
        t, n, shape, dtype = _saved(self)
        H = self.hidden_size
        out_shape = (2 * H,) if len(shape) == 2 else (len(n), 2 * H)
        dy = _grad_array(self, grad_out, out_shape, dtype).reshape(len(n), 2 * H)
        dx, dxt = self._grad_input(shape, dtype)
        dxt[t, n, :H] = dy[:, :H]
        dxt[0, :, H:] = dy[:, H:]
        return dx

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, batch_first={self.batch_first}"

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "batch_first": self.batch_first}


@registry.register("module")
class MeanPool(_SequencePicker):
    """Mean over each sequence's valid steps: ``y[n] = sum_{t < lengths[n]} x[t, n] / lengths[n]``
    (time-major), or the mean over all T steps without ``lengths``.

    Shapes as :class:`Last`: ``x`` (T, N, F), (N, T, F) with ``batch_first``, or (T, F) ->
    ``y`` (N, F) (or (F,)). Backward: ``dx[t, n] = dy[n] / lengths[n]`` for valid t, else 0.

    >>> x = np.arange(12.0).reshape(3, 2, 2)          # (T=3, N=2, F=2)
    >>> MeanPool()(x, lengths=[3, 2])
    array([[4., 5.],
           [4., 5.]])
    """

    def forward(self, x, lengths=None):
        x, xt, lengths, unbatched = self._time_major(x, lengths)
        steps, batch = xt.shape[:2]
        if lengths is None:
            w = np.full((steps, batch), 1.0 / steps, x.dtype)
        else:
            # w[t, n] = 1/lengths[n] on valid steps, 0 on padding
            w = (np.arange(steps)[:, None] < lengths[None, :]) / lengths[None, :]
            w = w.astype(x.dtype)
        y = np.einsum("tnf,tn->nf", xt, w)
        self._save_for_backward((w, x.shape, x.dtype))
        return y[0] if unbatched else y

    def backward(self, grad_out):
        w, shape, dtype = _saved(self)
        batch = w.shape[1]
        out_shape = (shape[-1],) if len(shape) == 2 else (batch, shape[-1])
        dy = _grad_array(self, grad_out, out_shape, dtype).reshape(batch, -1)
        dx, dxt = self._grad_input(shape, dtype)
        np.multiply(w[:, :, None], dy[None, :, :], out=dxt)
        return dx
