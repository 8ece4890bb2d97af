"""Property-based hardening (hypothesis): bad arguments and inputs, generated, for every public
constructor, the recurrent layers' forward and backward, ``fit``/``evaluate``/``predict``,
``load`` and the data readers. Each case must end in a documented error type whose message
names the culprit, within a time limit and a memory bound; never a hang, a raw ``MemoryError``
or an exception from deep inside NumPy.

The documented types: ``TypeError`` (wrong kind of value), ``ValueError`` (wrong value; the
checkpoint loader's ``CheckpointError`` is one), ``OSError`` (files: missing, a directory)."""
import contextlib
import math
import os
import resource
import signal
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import elman
from elman.data.datasets import read_csv, read_text

# deterministic in CI (the same cases every run), no example database written into the repo
PROPERTY = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
SECONDS = 10                      # any one case
MEGABYTES = 256                   # traced allocations (NumPy's included) of any one case
DOCUMENTED = (TypeError, ValueError, OSError)


class Hang(Exception):
    pass


def _data_segment() -> int | None:
    """This process's data segment in bytes (what RLIMIT_DATA limits), where Linux tells."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmData:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None


@contextlib.contextmanager
def bounded():
    """Fail the case if it runs longer than SECONDS or allocates more than MEGABYTES. A hard
    backstop too: the data segment may grow by at most 1 GiB during the case, so that a case
    that tries to allocate terabytes fails with MemoryError instead of meeting the OOM killer
    (which would end the whole test run)."""
    def alarm(signum, frame):
        raise Hang(f"no answer within {SECONDS} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    used, limits = _data_segment(), resource.getrlimit(resource.RLIMIT_DATA)
    if used is not None:
        cap = used + 2 ** 30
        resource.setrlimit(resource.RLIMIT_DATA, (cap if limits[1] == resource.RLIM_INFINITY
                                                  else min(cap, limits[1]), limits[1]))
    tracemalloc.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_DATA, limits)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEGABYTES * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MB"


def refused(call, *culprits):
    """``call()`` raises a documented error whose message names one of ``culprits``."""
    with bounded():
        with pytest.raises(DOCUMENTED) as e:
            call()
    assert any(c in str(e.value) for c in culprits), (culprits, repr(e.value))
    return e.value


def answered(call, *culprits):
    """``call()`` either returns or raises a documented error naming one of ``culprits``."""
    with bounded():
        try:
            return call()
        except DOCUMENTED as e:
            assert any(c in str(e) for c in culprits), (culprits, repr(e))
            return None


# -- bad values by kind --------------------------------------------------------------------------

junk = st.one_of(st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
bad_size = st.one_of(junk, st.booleans(), st.integers(max_value=0),
                     st.integers(min_value=10 ** 12, max_value=10 ** 30),
                     st.floats(allow_nan=True, allow_infinity=True))
bad_count = st.one_of(junk, st.booleans(), st.integers(max_value=-1),
                      st.floats(allow_nan=True, allow_infinity=True).filter(
                          lambda v: not (math.isfinite(v) and v == int(v) and v >= 0)))
bad_flag = st.one_of(junk, st.integers(),
                     st.floats(allow_nan=True))
bad_probability = st.one_of(junk, st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda v: not 0 <= v <= 1))
bad_dtype = st.sampled_from([None, "float16", "int32", np.int64, np.float16, int, complex, "x",
                             3, np.complex128])
bad_seed = st.one_of(st.text(min_size=1, max_size=4), st.integers(max_value=-1),
                     st.floats(allow_nan=True), st.dictionaries(st.text(max_size=2),
                                                                st.integers(), max_size=1))
# every value some constructor below accepts (hypothesis once drew "zeros", a valid bridge)
VALID_CHOICES = {"tanh", "relu", "sigmoid", "softmax", "linear", "mean", "sum", "none", "min",
                 "max", "auto", "rel", "abs", *elman.layers.ACTIVATIONS,
                 *elman.attention.ATTENTION_KINDS, *elman.seq2seq.BRIDGES,
                 *elman.registry.table("recurrent")}
bad_choice = st.one_of(st.text(max_size=6).filter(lambda v: v not in VALID_CHOICES),
                       st.integers())
bad_positive = st.one_of(junk, st.booleans(), st.floats(max_value=0.0),
                         st.floats(allow_nan=True).filter(math.isnan))
bad_positive_finite = st.one_of(bad_positive, st.just(math.inf))
bad_nonnegative = st.one_of(junk, st.booleans(), st.floats(max_value=-1e-9),
                            st.floats(allow_nan=True).filter(math.isnan))

# sizes that allocate nothing: only what is not a positive integer is wrong
bad_positive_int = st.one_of(junk, st.booleans(), st.integers(max_value=0),
                             st.floats(allow_nan=True, allow_infinity=True))
bad_int = st.one_of(junk.filter(lambda v: v is not None), st.booleans(),
                    st.floats(allow_nan=True, allow_infinity=True))
bad_shape = bad_size.filter(lambda v: not (isinstance(v, list) and v and all(
    isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v)))

KINDS = {"size": bad_size, "shape": bad_shape, "positive_int": bad_positive_int, "int": bad_int,
         "count": bad_count, "flag": bad_flag, "probability": bad_probability,
         "dtype": bad_dtype, "seed": bad_seed, "choice": bad_choice, "positive": bad_positive,
         "positive_finite": bad_positive_finite, "nonnegative": bad_nonnegative,
         "threads": bad_count.filter(lambda v: v is not None),
         # ModelCheckpoint's verbose is 0 or 1 (0.0, 1.0 and the booleans compare equal)
         "verbose": st.one_of(st.text(max_size=6),
                              st.floats(allow_nan=True).filter(lambda v: v not in (0, 1)),
                              st.integers().filter(lambda v: v not in (0, 1))),
         "separator": st.one_of(st.just(""), st.text(min_size=2, max_size=3), st.integers()),
         "name": st.one_of(st.just(""), st.integers(), st.none(), st.lists(st.text(), max_size=1))}

RNN_ARGS = {"input_size": "size", "hidden_size": "size", "num_layers": "size", "bias": "flag",
            "batch_first": "flag", "dropout": "probability", "bidirectional": "flag",
            "dtype": "dtype", "seed": "seed", "stateful": "flag"}
CELL_ARGS = {"input_size": "size", "hidden_size": "size", "bias": "flag", "dtype": "dtype",
             "seed": "seed"}
# (constructor, the valid arguments, {argument: kind of bad value})
CONSTRUCTORS = [
    (elman.RNN, dict(input_size=3, hidden_size=4), {**RNN_ARGS, "nonlinearity": "choice"}),
    (elman.GRU, dict(input_size=3, hidden_size=4), {**RNN_ARGS, "reset_after": "flag"}),
    (elman.LSTM, dict(input_size=3, hidden_size=4), {**RNN_ARGS, "proj_size": "count"}),
    (elman.RNNCell, dict(input_size=3, hidden_size=4), {**CELL_ARGS, "nonlinearity": "choice"}),
    (elman.GRUCell, dict(input_size=3, hidden_size=4), {**CELL_ARGS, "reset_after": "flag"}),
    (elman.LSTMCell, dict(input_size=3, hidden_size=4), {**CELL_ARGS, "peephole": "flag"}),
    (elman.Dense, dict(in_features=3, out_features=2),
     {"in_features": "size", "out_features": "size", "bias": "flag", "activation": "choice",
      "dtype": "dtype", "seed": "seed"}),
    (elman.Embedding, dict(num_embeddings=5, embedding_dim=2),
     {"num_embeddings": "size", "embedding_dim": "size", "dtype": "dtype", "seed": "seed"}),
    (elman.Dropout, {}, {"p": "probability", "seed": "seed"}),
    (elman.LayerNorm, dict(normalized_shape=4),
     {"normalized_shape": "shape", "eps": "positive_finite", "elementwise_affine": "flag",
      "dtype": "dtype"}),
    (elman.CrossEntropyLoss, {}, {"reduction": "choice", "label_smoothing": "probability"}),
    (elman.HuberLoss, {}, {"reduction": "choice", "delta": "positive"}),     # inf: MSE / 2
    (elman.EarlyStopping, {}, {"monitor": "name", "min_delta": "nonnegative",
                               "patience": "count",
                               "mode": "choice", "restore_best_weights": "flag"}),
    (elman.Sequential, {}, {"seed": "seed"}),
    (elman.Linear, dict(in_features=3, out_features=2),
     {"in_features": "size", "out_features": "size", "bias": "flag", "activation": "choice"}),
    (elman.LastBidirectional, dict(hidden_size=4),
     {"hidden_size": "positive_int", "batch_first": "flag"}),
    (elman.MeanPool, {}, {"batch_first": "flag"}),
    (elman.Softmax, {}, {"dim": "int"}),
    (elman.MSELoss, {}, {"reduction": "choice"}),
    (elman.BCELoss, {}, {"reduction": "choice"}),
    (elman.ModelCheckpoint, dict(filepath="m.npz"),
     {"monitor": "name", "save_best_only": "flag", "mode": "choice", "verbose": "verbose"}),
    (elman.CSVLogger, dict(filename="h.csv"), {"separator": "separator", "append": "flag"}),
    (elman.TimeBudget, dict(seconds=60.0),
     {"seconds": "positive", "after": "nonnegative", "reserve": "nonnegative"}),
    (lambda **kw: elman.StepLR(elman.SGD(elman.Dense(2, 1).parameters()), **kw),
     dict(step_size=2), {"step_size": "positive_int", "gamma": "nonnegative"}),
    (lambda **kw: elman.CosineAnnealingLR(elman.SGD(elman.Dense(2, 1).parameters()), **kw),
     dict(T_max=2), {"T_max": "positive_int", "eta_min": "nonnegative"}),
    (lambda **kw: elman.ReduceLROnPlateau(elman.SGD(elman.Dense(2, 1).parameters()), **kw),
     {}, {"mode": "choice", "factor": "probability", "patience": "count",
          "threshold_mode": "choice", "cooldown": "count", "min_lr": "nonnegative"}),
    (elman.set_num_threads, dict(n=1), {"n": "threads", "adaptive": "flag"}),
    (elman.Seq2Seq, dict(source_vocab=5, target_vocab=6, embedding_dim=2, hidden_size=2),
     {"source_vocab": "size", "target_vocab": "size", "embedding_dim": "size",
      "hidden_size": "size", "encoder_layers": "size", "decoder_layers": "size",
      "bidirectional": "flag", "cell": "choice", "attention": "choice", "bridge": "choice",
      "dropout": "probability", "dtype": "dtype", "seed": "seed"}),
    (elman.Attention, dict(query_size=3, key_size=3),
     {"query_size": "size", "key_size": "size", "kind": "choice", "dtype": "dtype",
      "seed": "seed"}),
    (elman.Bridge, dict(encoder_layers=1, decoder_layers=1, encoder_hidden=2,
                        decoder_hidden=3),
     {"encoder_layers": "positive_int", "decoder_layers": "positive_int",  # (no allocation)
      "encoder_hidden": "size", "decoder_hidden": "size", "bidirectional": "flag",
      "mode": "choice", "dtype": "dtype",
      "seed": "seed"}),
]
OPTIMIZERS = [
    (elman.SGD, {"lr": "nonnegative", "momentum": "nonnegative", "weight_decay": "nonnegative",
                 "nesterov": "flag", "maximize": "flag"}),
    (elman.RMSprop, {"lr": "nonnegative", "alpha": "nonnegative", "eps": "nonnegative",
                     "centered": "flag"}),
    (elman.Adagrad, {"lr": "nonnegative", "lr_decay": "nonnegative", "eps": "nonnegative"}),
    (elman.Adam, {"lr": "nonnegative", "eps": "nonnegative", "weight_decay": "nonnegative",
                  "amsgrad": "flag"}),
]


# one case per (constructor, argument), so that every argument is certain to be tried (a draw of
# the argument's name among 100 examples left that to chance), with fewer values each: ~1,600
# generated calls where there were 3,100, every argument with a dozen of its kind of bad value
ARGUMENTS = [(k, build, valid, name, kind) for k, (build, valid, spec) in enumerate(CONSTRUCTORS)
             for name, kind in sorted(spec.items())]
PER_ARGUMENT = settings(PROPERTY, max_examples=12)


@pytest.mark.parametrize("build, valid, name, kind", [a[1:] for a in ARGUMENTS],
                         ids=[f"{k}-{getattr(b, '__name__', '')}-{n}"
                              for k, b, _, n, _ in ARGUMENTS])
@PER_ARGUMENT
@given(data=st.data())
def test_constructors_refuse_bad_arguments_by_name(build, valid, name, kind, data):
    value = data.draw(KINDS[kind])
    refused(lambda: build(**{**valid, name: value}), name)


@pytest.mark.parametrize("build, spec", OPTIMIZERS, ids=[c[0].__name__ for c in OPTIMIZERS])
@PROPERTY
@given(data=st.data())
def test_optimizers_refuse_bad_hyperparameters_by_name(build, spec, data):
    name = data.draw(st.sampled_from(sorted(spec)))
    value = data.draw(KINDS[spec[name]])
    params = elman.Dense(2, 1, seed=0).parameters()
    refused(lambda: build(params, **{name: value}), name)


# -- forward and backward of the recurrent layers -------------------------------------------------

LAYERS = {name: getattr(elman, name)(3, 4, num_layers=2, bidirectional=True, seed=0)
          for name in ("RNN", "GRU", "LSTM")}
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex64, object,
                          np.str_])


@st.composite
def arrays(draw):
    shape, dtype = draw(shapes), draw(dtypes)
    if dtype is object:
        return np.empty(shape, dtype=object)
    if dtype is np.str_:
        return np.full(shape, "x")
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize("name", sorted(LAYERS))
@PROPERTY
@given(x=st.one_of(arrays(), junk, st.lists(st.lists(st.floats(), max_size=3), max_size=3)))
def test_forward_takes_any_input_or_names_it(name, x):
    """An input is read as (T, N, 3) or (T, 3) or refused naming ``input``; the result has the
    shape torch gives (empty for N = 0)."""
    out = answered(lambda: LAYERS[name](x), "input")
    if out is not None:
        arr = np.asarray(x)
        assert out[0].shape == arr.shape[:-1] + (8,)


@pytest.mark.parametrize("name", sorted(LAYERS))
@PROPERTY
@given(lengths=st.one_of(junk, arrays(), st.lists(st.integers(-3, 9), max_size=4)),
       hx=st.one_of(st.none(), arrays()))
def test_lengths_and_initial_states_are_checked_by_name(name, lengths, hx):
    layer = LAYERS[name]
    hx = (hx, hx) if name == "LSTM" and hx is not None else hx
    answered(lambda: layer(np.ones((5, 3, 3), np.float32), hx, lengths=lengths),
             "lengths", "h_0", "c_0", "hx")


@pytest.mark.parametrize("name", sorted(LAYERS))
@PROPERTY
@given(dout=st.one_of(st.none(), arrays(), junk))
def test_backward_checks_the_gradient_it_is_given(name, dout):
    layer = LAYERS[name]
    layer(np.ones((5, 2, 3), np.float32))
    answered(lambda: layer.backward(dout, None), "dout")
    layer._release_cache()


# -- fit, evaluate, predict ---------------------------------------------------------------------

def _model():
    model = elman.Sequential([elman.GRU(3, 4, seed=0), elman.Last(), elman.Dense(4, 1, seed=0)])
    model.compile("adam", "mse")
    return model


MODEL = _model()
X, Y = np.ones((6, 5, 3), np.float32), np.ones((6, 1), np.float32)   # (N, T, F), (N, 1)
# arguments of fit and values each of them must refuse
FIT_ARGS = {"epochs": bad_count, "batch_size": bad_size.filter(
                lambda v: not (isinstance(v, int) and v > 0)),
            "validation_split": st.one_of(bad_probability, st.just(1.0)),
            "callbacks": st.one_of(st.text(min_size=1, max_size=3), st.integers(),
                                   st.builds(elman.EarlyStopping), st.just([1])),
            "initial_epoch": bad_count, "shuffle": st.one_of(st.integers(), st.none()),
            "verbose": st.one_of(st.text(max_size=2), st.none(), st.integers(min_value=3))}


@PROPERTY
@given(data=st.data())
def test_fit_refuses_bad_arguments_by_name(data):
    name = data.draw(st.sampled_from(sorted(FIT_ARGS)))
    value = data.draw(FIT_ARGS[name])
    refused(lambda: MODEL.fit(X, Y, **{name: value}), name)


@PROPERTY
@given(x=st.one_of(arrays(), junk), y=st.one_of(arrays(), junk),
       method=st.sampled_from(["fit", "evaluate", "predict"]))
def test_fit_evaluate_predict_take_any_data_or_name_it(x, y, method):
    call = {"fit": lambda: MODEL.fit(x, y, verbose=0),
            "evaluate": lambda: MODEL.evaluate(x, y),
            "predict": lambda: MODEL.predict(x)}[method]
    answered(call, "x", "y", "input")


# -- files: load and the readers -------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ck") / "good.npz")
    model = _model()
    model.fit(X, Y, verbose=0)
    elman.save(model, path)
    with open(path, "rb") as f:
        return f.read()


@PROPERTY
@given(data=st.data())
def test_load_takes_any_damaged_file_or_says_why(good_checkpoint, tmp_path, data):
    """Cut short, bytes overwritten, or random bytes: ``load`` returns a model or raises a
    ValueError (CheckpointError) naming the file, quickly and in bounded memory."""
    kind = data.draw(st.sampled_from(["truncate", "overwrite", "random"]))
    raw = bytearray(good_checkpoint)
    if kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "overwrite":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    else:
        raw = bytearray(data.draw(st.binary(max_size=512)))
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(raw))
    model = answered(lambda: elman.load(str(path)), str(path), "damaged.npz")
    if model is not None:
        assert np.isfinite(model.predict(X)).all()


@PROPERTY
@given(text=st.text(max_size=300), encoding=st.sampled_from(["utf-8", "latin-1"]))
def test_read_csv_takes_any_text_or_names_the_file(tmp_path, text, encoding):
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if encoding == "utf-8"
                     else text.encode("latin-1", "replace"))
    answered(lambda: read_csv(str(path)), "data.csv")


@PROPERTY
@given(raw=st.binary(max_size=300))
def test_read_text_takes_any_bytes_or_names_the_file(tmp_path, raw):
    path = tmp_path / "book.txt"
    path.write_bytes(raw)
    answered(lambda: read_text(str(path)), "book.txt")


@pytest.mark.parametrize("reader", [elman.load, read_csv, read_text])
def test_readers_refuse_what_is_not_a_regular_file(tmp_path, reader):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path, tmp_path / "missing"):
        refused(lambda: reader(str(path)), str(path))
