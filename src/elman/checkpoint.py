"""Checkpoints: one ``.npz`` file of arrays plus one JSON document; never pickle.

:func:`save` writes a model (any :class:`~elman.Module` with a ``config()``), its optimizer's
state, its epoch, the state of every random generator inside it, and ``extra`` user data (a
vocabulary, a scaler's mean and std, the best validation loss, ...). :func:`load` rebuilds the
model from the JSON description through an explicit table of class names (nothing from the file
is ever imported, evaluated or unpickled) and restores all of it, so training resumes bit for
bit. :func:`load_checkpoint` also hands back the optimizer and ``extra``, for models trained
with an explicit loop.

>>> import os, tempfile, numpy as np, elman
>>> lstm = elman.LSTM(3, 4, seed=0)
>>> x = np.ones((5, 2, 3), np.float32)
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "lstm.npz")
...     save(lstm, path, extra={"vocab": ["a", "b"]})
...     ckpt = load_checkpoint(path)
>>> type(ckpt.model).__name__, ckpt.extra
('LSTM', {'vocab': ['a', 'b']})
>>> bool(np.array_equal(lstm(x)[0], ckpt.model(x)[0]))
True

File format (``format_version`` 1)
----------------------------------
A zip archive of NumPy ``.npy`` members, as :func:`numpy.savez` writes, at exactly ``path`` (no
suffix is added; ``.npz`` is the natural one), readable with ``np.load(path,
allow_pickle=False)``:

==================  =============================================================================
``__elman__``       a 0-d unicode array holding the JSON document below
``param/<name>``    every parameter, ``<name>`` as in ``model.named_parameters()``
``optim/<k>``       the optimizer's state arrays
``rng/<k>``         arrays inside a generator state (only MT19937 has one)
``config/<k>``      arrays inside a ``config()`` (none of elman's own classes has any)
``extra/<k>``       the arrays inside ``extra``
==================  =============================================================================

The JSON document::

    {"format": "elman.checkpoint", "format_version": 1,
     "elman_version": "0.1.0", "numpy_version": "2.4.6",
     "model": {"class": "LSTM", "config": {...}},     # Sequential: config["layers"] nests these
     "training": true,                                 # model.training when saved
     "params": [{"name": "weight_ih_l0", "shape": [16, 3], "dtype": "float32"}, ...],
     "optimizer": null | {"class": "Adam",
                          "params": ["weight_ih_l0", ...],   # the optimizer's parameter order
                          "state": <optimizer.state_dict()>},
     "compile": null | <model.compile_config()>,
     "epoch": null | <model.epoch>,
     "rng": {"<module path>": {"state": <generator.bit_generator.state>}
                              | {"same_as": "<module path>"}},   # one generator, shared
     "extra": null | <extra>}

Inside ``optimizer``, ``compile``, ``rng``, ``config`` and ``extra`` every NumPy array is replaced
by a reference ``{"__ndarray__": "extra/0", "shape": [3], "dtype": "<f8"}``; loading checks each
array's shape and dtype against its reference, and that the archive holds no other members.
Tuples come back as lists and NumPy scalars as Python numbers; JSON has no NaN or infinity, so a
non-finite float must be stored as an array (``np.array(best_loss)``). A reader ignores top-level
keys it does not know, so additions that older readers may skip keep version 1; any other change
of the layout raises ``FORMAT_VERSION``, and a reader refuses versions other than its own.

A write goes to a temporary file in the target's directory, is flushed and fsynced, then renamed
onto ``path`` (atomic on POSIX and Windows): a crash, an error or a model with NaN/inf weights
leaves the previous checkpoint untouched.
"""
from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import json
import numbers
import os
import re
import stat
import tempfile
import zipfile
from typing import Any, Mapping

import numpy as np

from . import _validate, registry
from ._version import __version__
from .losses import Loss
from .module import Module
from .optim import Optimizer

__all__ = ["save", "load", "load_checkpoint", "Checkpoint", "CheckpointError", "FORMAT_VERSION",
           "remove_stale_temporaries"]

FORMAT = "elman.checkpoint"
FORMAT_VERSION = 1
_META = "__elman__"                 # the member holding the JSON document
_REF = "__ndarray__"                # the key of an array reference in the JSON document
_ARRAY_KINDS = "biufcUS"            # numbers, booleans and strings: nothing that needs pickle
_ZIP_MAGIC = b"PK\x03\x04"

_BIT_GENERATORS = {cls.__name__: cls for cls in (
    np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64)}


class CheckpointError(ValueError):
    """A file that is not a valid elman checkpoint (corrupted, truncated, holding pickled data,
    of another format version, or not matching its own description). The message starts with
    ``checkpoint <path>:``."""


@dataclasses.dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    ``model``: the rebuilt module with its weights, generator states, epoch and train/eval mode;
    ``optimizer``: the optimizer (over ``model``'s parameters, in the saved order) with its state,
    or None; ``extra``: the ``extra`` passed to :func:`save` (arrays restored); ``epoch``: the
    model's ``epoch`` when saved, or None.
    """

    model: Module
    optimizer: Optimizer | None
    extra: Any
    epoch: int | None


# -- plain data <-> JSON + arrays ---------------------------------------------------------------

class _Encoder:
    """Turns plain data with NumPy arrays inside into JSON-able data, setting the arrays aside
    under numbered keys (``extra/0``, ``extra/1``, ...) and leaving references in their place."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}

    def array(self, prefix: str, arr: np.ndarray, where: str) -> dict:
        if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.hasobject:
            raise TypeError(f"save: {where} is an array of dtype {arr.dtype}, which cannot be "
                            f"stored without pickle (allowed: booleans, numbers and strings)")
        k = self._counts.get(prefix, 0)
        self._counts[prefix] = k + 1
        key = f"{prefix}/{k}"
        self.arrays[key] = arr
        return {_REF: key, "shape": list(arr.shape), "dtype": arr.dtype.str}

    def encode(self, value, prefix: str, where: str):
        try:
            return self._encode(value, prefix, where)
        except RecursionError:
            raise ValueError(f"save: {where} is nested too deeply to store") from None

    def _encode(self, value, prefix: str, where: str):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.ndarray):
            return self.array(prefix, value, where)
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"save: {where} is {value}, and JSON has no NaN or infinity; "
                                 f"store it as an array instead (np.array({value}))")
            return value
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(f"save: {where} has a key {key!r} of type "
                                    f"{type(key).__name__}; keys must be strings (JSON objects)")
                if key == _REF:
                    raise ValueError(f"save: {where} uses the key {_REF!r}, which elman "
                                     f"reserves for array references")
                out[key] = self._encode(item, prefix, f"{where}[{key!r}]")
            return out
        if isinstance(value, (list, tuple)):
            return [self._encode(item, prefix, f"{where}[{i}]") for i, item in enumerate(value)]
        raise TypeError(f"save: {where} is a {type(value).__name__}, which a checkpoint cannot "
                        f"hold without pickle (allowed: None, bool, int, float, str, lists, dicts "
                        f"with string keys, NumPy arrays of numbers or strings)")


class _Decoder:
    """The reverse of :class:`_Encoder`: references become the archive's arrays, each checked
    against the shape and dtype the reference records; ``used`` collects the keys taken."""

    def __init__(self, fail, arrays: Mapping[str, np.ndarray]):
        self.fail = fail
        self.arrays = arrays
        self.used: set[str] = set()

    def array(self, key, shape, dtype, where: str) -> np.ndarray:
        if not isinstance(key, str) or not isinstance(shape, list):
            raise self.fail(f"malformed array description for {where}: key {key!r}, shape "
                            f"{shape!r}")
        if key not in self.arrays:
            raise self.fail(f"the array {key!r} ({where}) is missing from the archive")
        arr = self.arrays[key]
        if list(arr.shape) != list(shape):
            raise self.fail(f"the array {key!r} ({where}) has shape {list(arr.shape)} but the "
                            f"JSON document records {list(shape)}")
        try:
            expected = np.dtype(dtype)
        except TypeError:
            raise self.fail(f"the JSON document records an invalid dtype {dtype!r} for the "
                            f"array {key!r} ({where})") from None
        if arr.dtype != expected:
            raise self.fail(f"the array {key!r} ({where}) has dtype {arr.dtype} but the JSON "
                            f"document records {expected}")
        self.used.add(key)
        return arr

    def decode(self, value, where: str):
        try:
            return self._decode(value, where)
        except RecursionError:
            raise self.fail(f"{where} is nested too deeply") from None

    def _decode(self, value, where: str):
        if isinstance(value, dict):
            if _REF in value:
                if set(value) != {_REF, "shape", "dtype"} or not isinstance(value[_REF], str) \
                        or not isinstance(value["shape"], list):
                    raise self.fail(f"malformed array reference at {where}: {value!r}")
                return self.array(value[_REF], value["shape"], value["dtype"], where)
            return {k: self._decode(v, f"{where}[{k!r}]") for k, v in value.items()}
        if isinstance(value, list):
            return [self._decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value


# -- save ---------------------------------------------------------------------------------------

def save(model: Module, path, optimizer: Optimizer | None = None, extra=None) -> None:
    """Write ``model`` (and optionally its optimizer and ``extra``) to the checkpoint ``path``.

    ``path`` is used exactly as given (no suffix is added; ``.npz`` is conventional); its
    directory must exist. ``model`` is any :class:`~elman.Module` with a ``config()`` method;
    its class must be one of elman's (or be passed to :func:`load` in ``custom_objects``).
    ``optimizer`` defaults to ``model.optimizer`` (a compiled ``Sequential``'s) when there is
    one, and must update only ``model``'s parameters. ``extra`` is plain data (None, bool,
    int, float, str, lists, dicts with string keys) with NumPy arrays anywhere inside it.

    Also saved: ``model.compile_config()`` and ``model.epoch`` when the model has them, its
    train/eval mode, and the state of each ``numpy.random.Generator`` held as ``_rng`` by the
    model or any sub-module (dropout masks and shuffling continue where they were).

    Raises ``ValueError`` if a parameter (or an optimizer state array) holds NaN or infinity
    (a diverged model must not replace a good checkpoint) and ``TypeError`` for data a
    checkpoint cannot hold; the file at ``path`` is then left as it was, as it is on any other
    failure.
    """
    path = os.fspath(path)
    if not isinstance(model, Module):
        raise TypeError(f"save: model must be an elman Module, got {type(model).__name__}")
    if optimizer is None:
        optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"save: optimizer must be an elman Optimizer or None, got "
                        f"{type(optimizer).__name__}")
    text, arrays = _serialise(model, optimizer, extra, path)
    _atomic_write(path, text, arrays)


def _serialise(model: Module, optimizer, extra, path: str) -> tuple[str, dict]:
    """The JSON document and the arrays to write, all checked before any file is touched."""
    cls_name = type(model).__name__
    config = getattr(model, "config", None)
    if not callable(config):
        raise TypeError(f"save: {cls_name} has no config() method, so its architecture cannot be "
                        f"described; give it one returning its constructor arguments")
    enc = _Encoder()
    spec = {"class": cls_name, "config": enc.encode(config(), "config", f"{cls_name}.config()")}

    arrays: dict[str, np.ndarray] = {}
    params = []
    names_by_id: dict[int, str] = {}
    for name, p in model.named_parameters():
        if not np.all(np.isfinite(p.data)):
            raise ValueError(f"save: parameter {name!r} of the {cls_name} holds NaN or infinite "
                             f"values; refusing to write {path} (a diverged model must not "
                             f"replace a good checkpoint)")
        arrays[f"param/{name}"] = p.data
        params.append({"name": name, "shape": list(p.data.shape), "dtype": p.data.dtype.name})
        names_by_id.setdefault(id(p), name)

    opt_doc = None
    if optimizer is not None:
        order = []
        for i, p in enumerate(optimizer.params):
            if id(p) not in names_by_id:
                raise ValueError(f"save: the {type(optimizer).__name__} updates a parameter "
                                 f"(number {i}, shape {p.data.shape}) that is not part of the "
                                 f"{cls_name}; build the optimizer over model.parameters()")
            order.append(names_by_id[id(p)])
        state = optimizer.state_dict()
        for sname, sarrays in state["state"].items():
            for i, a in enumerate(sarrays):
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"save: the optimizer state {sname!r} of parameter "
                                     f"{order[i]!r} holds NaN or infinite values; refusing to "
                                     f"write {path}")
        opt_doc = {"class": type(optimizer).__name__, "params": order,
                   "state": enc.encode(state, "optim", "the optimizer state")}

    compile_doc = None
    compile_config = getattr(model, "compile_config", None)
    if callable(compile_config):
        compile_doc = enc.encode(compile_config(), "compile", f"{cls_name}.compile_config()")

    epoch = getattr(model, "epoch", None)
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(f"save: {cls_name}.epoch must be an integer or None, got {epoch!r}")
        epoch = int(epoch)

    rng: dict[str, dict] = {}
    owners: dict[int, str] = {}
    for mpath, module in model.named_modules():
        gen = getattr(module, "_rng", None)
        if not isinstance(gen, np.random.Generator):
            continue
        if id(gen) in owners:                 # one generator shared by several modules
            rng[mpath] = {"same_as": owners[id(gen)]}
            continue
        owners[id(gen)] = mpath
        rng[mpath] = {"state": enc.encode(gen.bit_generator.state, "rng",
                                          f"the generator state of {mpath or 'the model'}")}

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "elman_version": __version__,
        "numpy_version": np.__version__,
        "model": spec,
        "training": bool(model.training),
        "params": params,
        "optimizer": opt_doc,
        "compile": compile_doc,
        "epoch": epoch,
        "rng": rng,
        "extra": enc.encode(extra, "extra", "extra"),
    }
    arrays.update(enc.arrays)
    return json.dumps(doc, allow_nan=False, ensure_ascii=False), arrays


def _write_array(zf: zipfile.ZipFile, key: str, arr: np.ndarray) -> None:
    """One ``.npy`` member, as ``np.savez`` writes it, never with pickle."""
    with zf.open(key + ".npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def _new_file_mode(path: str) -> int:
    """Permissions for the new file: the old checkpoint's, else the usual ones (0666 - umask);
    ``mkstemp`` would otherwise leave 0600."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def remove_stale_temporaries(directory: str, name: str | None = None) -> None:
    """Delete the temporary files that saves of ``name`` (of any file when None) into
    ``directory`` left behind when their process was killed (``.<name>.<pid>.<random>.tmp``
    whose pid no longer runs; POSIX only: elsewhere there is no harmless way to ask whether a
    process lives). Every save does this for its own file; the commands do it for their whole
    output directory when they start."""
    if os.name != "posix":
        return
    target = ".+" if name is None else re.escape(name)
    pattern = re.compile(rf"^\.{target}\.(\d+)\.[A-Za-z0-9_]+\.tmp$")
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            match = pattern.match(entry)
            if match is None or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)     # signal 0: only asks whether it exists
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, entry))
            except (PermissionError, OverflowError, ValueError):
                pass                                # alive (another user's) or not a pid


def _atomic_write(path: str, text: str, arrays: Mapping[str, np.ndarray]) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: {path} is a directory; give a file path, e.g. "
                                f"{os.path.join(path, 'model.npz')}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the directory {directory} does not exist (create it "
                                f"first)")
    mode = _new_file_mode(path)
    remove_stale_temporaries(directory, os.path.basename(path))
    # the writer's pid in the name tells a later save whether its writer is gone
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp",
                               prefix=f".{os.path.basename(path)}.{os.getpid()}.")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                _write_array(zf, _META, np.array(text, dtype=np.str_))
                for key, arr in arrays.items():
                    _write_array(zf, key, arr)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # make the rename itself durable (POSIX; directories cannot be opened on Windows)
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- load ---------------------------------------------------------------------------------------

def load(path, custom_objects: Mapping[str, type] | None = None) -> Module:
    """Rebuild the model saved at ``path``, with its weights, generator states, epoch and
    train/eval mode. A model saved with ``compile_config()`` (a compiled ``Sequential``) comes
    back compiled, its optimizer state restored, ready to ``fit(..., initial_epoch=...)``. For
    a plain module's optimizer and for ``extra``, use :func:`load_checkpoint`.

    Class names in the file are looked up in a fixed table of elman's classes (layers, cells,
    losses, optimizers, ``Sequential``) and in ``custom_objects`` (``{"MyModel": MyModel}``, for
    your own ``Module`` sub-classes with a ``config()``; they take precedence). The file is read
    with ``allow_pickle=False``; nothing in it is imported, evaluated or unpickled.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError``, naming the file and the
    problem, for a file that is not an elman checkpoint, is truncated or corrupted, holds
    pickled objects, has an unsupported format version, names an unknown class, or whose arrays
    do not match its description.
    """
    return load_checkpoint(path, custom_objects).model


def load_checkpoint(path, custom_objects: Mapping[str, type] | None = None) -> Checkpoint:
    """Like :func:`load`, returning a :class:`Checkpoint` (model, optimizer, extra, epoch).

    The optimizer is rebuilt over the model's parameters (in the order it had when saved) with
    its hyper-parameters and state, so an explicit training loop resumes bit for bit::

        ckpt = elman.load_checkpoint("run.npz")
        model, opt = ckpt.model, ckpt.optimizer
    """
    path = os.fspath(path)

    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path}: {message}")

    arrays = _Archive(path, fail)
    try:
        return _load(arrays, custom_objects, fail)
    finally:
        arrays.close()


def _load(arrays: "_Archive", custom_objects, fail) -> Checkpoint:
    doc = _read_document(arrays, fail)
    dec = _Decoder(fail, arrays)
    dec.used.add(_META)
    classes = _registry(custom_objects, fail)

    # architecture and weights: the rebuilt modules may not allocate much more than the
    # archive holds parameter values for, so a small file describing a huge model fails before
    # building it (a near miss is left to load_state_dict, whose message is more precise)
    held = 0
    for entry in _as(list, doc["params"], "params", fail):
        key = f"param/{entry.get('name')}" if isinstance(entry, dict) else None
        if key in arrays:
            held += int(np.prod(arrays.shape(key), dtype=np.int64))
    budget = 2 * held + 2**24
    try:
        with _validate.parameter_budget(budget):
            model = _build(doc["model"], classes["module"], dec, fail, "model")
    except RecursionError:
        raise fail("the architecture is nested too deeply") from None
    if not isinstance(model, Module):
        raise fail(f"the architecture's class {doc['model']['class']!r} is not a Module")
    state = {}
    for i, entry in enumerate(_as(list, doc["params"], "params", fail)):
        if not isinstance(entry, dict) or set(entry) != {"name", "shape", "dtype"}:
            raise fail(f"malformed parameter entry params[{i}]: {entry!r}")
        name = entry["name"]
        state[name] = dec.array(f"param/{name}", entry["shape"], entry["dtype"],
                                f"parameter {name!r}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as e:
        msg = e
        raise fail(f"the saved parameters do not fit the rebuilt {type(model).__name__}: "
                   f"{msg}") from e

    # generators, epoch, mode
    modules = dict(model.named_modules())
    generators: dict[str, np.random.Generator] = {}
    for mpath, entry in _as(dict, doc["rng"], "rng", fail).items():
        if mpath not in modules:
            raise fail(f"there is a generator state for the sub-module {mpath!r}, which the "
                       f"rebuilt {type(model).__name__} does not have")
        if isinstance(entry, dict) and set(entry) == {"same_as"} \
                and isinstance(entry["same_as"], str) and entry["same_as"] in generators:
            gen = generators[entry["same_as"]]
        elif isinstance(entry, dict) and set(entry) == {"state"}:
            gen = _generator(dec.decode(entry["state"], f"rng[{mpath!r}]"), mpath, fail)
        else:
            raise fail(f"malformed generator entry rng[{mpath!r}]: {entry!r}")
        setattr(modules[mpath], "_rng", gen)
        generators[mpath] = gen
    epoch = doc["epoch"]
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
            raise fail(f"epoch must be an integer in [0, {MAX_EPOCH}] or null, got {epoch!r}")
        model.epoch = epoch
    model.train(bool(doc["training"]))

    # optimizer, compiled state, extra
    optimizer = None
    if doc["optimizer"] is not None:
        optimizer = _optimizer(doc["optimizer"], model, classes["optimizer"], dec, fail)
    extra = dec.decode(doc["extra"], "extra")
    compile_doc = dec.decode(doc["compile"], "compile")
    left = set(arrays) - dec.used
    if left:
        raise fail(f"the archive holds arrays that the JSON document does not describe: "
                   f"{sorted(left)}")
    if compile_doc is not None and callable(getattr(model, "compile", None)):
        optimizer = _recompile(model, compile_doc, optimizer, classes, fail)
    return Checkpoint(model=model, optimizer=optimizer, extra=extra, epoch=epoch)


def _as(kind: type, value, where: str, fail):
    if not isinstance(value, kind):
        raise fail(f"malformed JSON document: {where} must be a {kind.__name__}, got "
                   f"{type(value).__name__}")
    return value


#: the largest epoch count a checkpoint may record
MAX_EPOCH = 10**9
#: the most bytes the JSON document may take (the largest one a task writes is a few MB)
MAX_DOCUMENT_BYTES = 64 * 2**20


class _Archive(collections.abc.Mapping):
    """The archive's arrays by key, read lazily: a member is decompressed only when the JSON
    document asks for it, so members it does not describe are refused by name without ever
    being inflated. Before anything is read: the path must be a regular file (a FIFO would
    block), member names must be unique, and the sizes the archive declares for its members
    (which bound what decompression may produce) must fit in memory, the document in
    :data:`MAX_DOCUMENT_BYTES`. No member is ever unpickled."""

    def __init__(self, path: str, fail):
        self.fail = fail
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"checkpoint {path}: no such file") from None
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"checkpoint {path}: is a directory, not a checkpoint file")
        if not stat.S_ISREG(info.st_mode):
            raise fail("not a regular file (a FIFO, socket or device); refused without "
                       "opening it")
        with open(path, "rb") as f:
            magic = f.read(len(_ZIP_MAGIC))
        if magic != _ZIP_MAGIC:
            what = "a pickle, which elman never loads" if magic[:1] == b"\x80" else \
                "an empty file" if not magic else f"it starts with {magic!r}"
            raise fail(f"not an elman checkpoint (.npz zip archive): {what}")
        try:
            self.zip = zipfile.ZipFile(path)
            members = self.zip.infolist()
        except Exception as e:            # zipfile.BadZipFile, EOFError, OSError, ...
            raise fail(f"the archive is corrupted or truncated ({type(e).__name__}: {e})") from e
        names = [m.filename for m in members]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise fail(f"the archive holds several members named {duplicated}")
        self.members = {}
        for m in members:
            if not m.filename.endswith(".npy"):
                raise fail(f"the member {m.filename!r} is not a NumPy .npy array")
            self.members[m.filename[:-4]] = m
        declared = sum(m.file_size for m in members)
        memory = _validate.physical_memory()
        if memory is not None and declared > memory:
            raise fail(f"the archive's members would take {declared / 2**30:,.1f} GiB once "
                       f"decompressed, more than this machine's {memory / 2**30:,.1f} GiB")
        meta = self.members.get(_META)
        if meta is not None and meta.file_size > MAX_DOCUMENT_BYTES:
            raise fail(f"the JSON document takes {meta.file_size:,} bytes; a checkpoint's is "
                       f"at most {MAX_DOCUMENT_BYTES:,}")
        self.cache: dict[str, np.ndarray] = {}

    def __iter__(self):
        return iter(self.members)

    def __len__(self):
        return len(self.members)

    def _open(self, key: str):
        f = self.zip.open(self.members[key])
        if f.read(6) != b"\x93NUMPY":
            f.close()
            raise self.fail(f"the member {key!r} is not a NumPy .npy array (raw bytes, e.g. a "
                            f"pickle); refused without unpickling it")
        f.close()
        return self.zip.open(self.members[key])

    def shape(self, key: str) -> tuple:
        """The shape a member's header declares, without reading its data."""
        with self._open(key) as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                shape, _, _ = read_header(f)
            except Exception as e:
                raise self.fail(f"the member {key!r} has an invalid .npy header ({e})") from e
        return shape

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self.cache:
            return self.cache[key]
        if key not in self.members:
            raise KeyError(key)
        try:
            with self._open(key) as f:
                value = np.lib.format.read_array(f, allow_pickle=False)
        except CheckpointError:
            raise
        except ValueError as e:
            if "allow_pickle" in str(e) or "Object arrays" in str(e):
                raise self.fail(f"the member {key!r} holds pickled Python objects (an object "
                                f"array); refused without unpickling it") from None
            raise self.fail(f"the member {key!r} is corrupted ({e})") from e
        except Exception as e:            # zlib.error, EOFError, BadZipFile (CRC), ...
            raise self.fail(f"the archive is corrupted or truncated ({type(e).__name__}: "
                            f"{e})") from e
        if value.dtype.kind not in _ARRAY_KINDS or value.dtype.hasobject:
            raise self.fail(f"the member {key!r} has dtype {value.dtype}, which a checkpoint "
                            f"never holds")
        self.cache[key] = value
        return value

    def close(self) -> None:
        self.zip.close()


_KEYS = ("format", "format_version", "elman_version", "numpy_version", "model", "training",
         "params", "optimizer", "compile", "epoch", "rng", "extra")


def _read_document(arrays: "_Archive", fail) -> dict:
    if _META not in arrays:
        raise fail(f"not an elman checkpoint: the archive has no {_META!r} member (was it "
                   f"written by elman.save?)")
    meta = arrays[_META]
    if meta.ndim != 0 or meta.dtype.kind != "U":
        raise fail(f"the {_META!r} member must be a 0-d unicode array holding JSON, got dtype "
                   f"{meta.dtype} and shape {meta.shape}")
    try:
        doc = json.loads(str(meta[()]))
    except (json.JSONDecodeError, RecursionError) as e:
        raise fail(f"the JSON document in {_META!r} is invalid ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise fail(f"not an elman checkpoint: the JSON document's format is not {FORMAT!r}")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise fail(f"format version {version!r} is not supported: elman {__version__} reads "
                   f"version {FORMAT_VERSION}" + (" (the file was written by a newer elman)"
                                                  if newer else ""))
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise fail(f"malformed JSON document: missing {missing}")
    return doc


def _registry(custom_objects, fail) -> dict[str, dict[str, type]]:
    """Name -> class tables for modules, losses and optimizers: elman's own classes (from
    :mod:`elman.registry`) plus ``custom_objects``. The only way a name in a file becomes a
    class."""
    table = {kind: registry.table(kind) for kind in ("module", "loss", "optimizer")}
    for name, cls in dict(custom_objects or {}).items():
        if not isinstance(name, str) or not isinstance(cls, type):
            raise TypeError(f"load: custom_objects must map class names to classes, got "
                            f"{name!r}: {cls!r}")
        for kind, base in (("module", Module), ("loss", Loss), ("optimizer", Optimizer)):
            if issubclass(cls, base):
                table[kind][name] = cls
    return table


def _build(spec, classes: dict, dec: _Decoder, fail, where: str):
    """An object from ``{"class": name, "config": kwargs}``; a config entry ``layers`` that
    is a list of such specs (``Sequential``) is built first."""
    if not isinstance(spec, dict) or set(spec) != {"class", "config"} \
            or not isinstance(spec["config"], dict):
        raise fail(f"malformed class description at {where}: expected {{'class': name, "
                   f"'config': {{...}}}}, got {spec!r}")
    name = spec["class"]
    cls = classes.get(name) if isinstance(name, str) else None
    if cls is None:
        raise fail(f"unknown class {name!r} at {where} (known: {sorted(classes)}); to load a "
                   f"class of your own pass custom_objects={{{name!r}: {name}}}")
    config = dec.decode(spec["config"], f"{where}.config")
    layers = config.get("layers")
    if isinstance(layers, list) and all(isinstance(s, dict) and set(s) == {"class", "config"}
                                        for s in layers):
        config["layers"] = [_build(s, classes, dec, fail, f"{where}.layers[{i}]")
                            for i, s in enumerate(layers)]
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:
        raise fail(f"cannot rebuild {name} ({where}) from its config: {e}") from e


def _generator(state, mpath: str, fail) -> np.random.Generator:
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        raise fail(f"the generator state of {mpath or 'the model'!r} names an unknown bit "
                   f"generator {name!r} (known: {sorted(_BIT_GENERATORS)})")
    gen = np.random.Generator(_BIT_GENERATORS[name]())
    try:
        gen.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise fail(f"the generator state of {mpath or 'the model'!r} is invalid: {e}") from e
    return gen


def _optimizer(entry, model: Module, classes: dict, dec: _Decoder, fail) -> Optimizer:
    if not isinstance(entry, dict) or set(entry) != {"class", "params", "state"}:
        raise fail(f"malformed optimizer entry: {entry!r}")
    name = entry["class"]
    cls = classes.get(name) if isinstance(name, str) else None
    if cls is None:
        raise fail(f"unknown optimizer class {name!r} (known: {sorted(classes)})")
    by_name = dict(model.named_parameters())
    unknown = [n for n in _as(list, entry["params"], "optimizer.params", fail)
               if not isinstance(n, str) or n not in by_name]
    if unknown:
        raise fail(f"the optimizer refers to parameters the model does not have: {unknown}")
    params = [by_name[n] for n in entry["params"]]
    state = dec.decode(entry["state"], "optimizer.state")
    bad = _non_finite(state, "optimizer.state")
    if bad:
        raise fail(f"the optimizer state holds NaN or infinity at {bad}")
    try:
        optimizer = cls(params, **state["hyperparams"])
        optimizer.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as e:
        raise fail(f"cannot restore the {name} optimizer: {e}") from e
    return optimizer


def _non_finite(value, where: str) -> str | None:
    """Where the first NaN or infinity in plain data with arrays inside is, or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite(v, f"{where}[{k!r}]")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{where}[{i}]")
            if found:
                return found
    elif isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            return where
    elif isinstance(value, float) and not np.isfinite(value):
        return where
    return None


def _recompile(model, compile_doc, optimizer, classes, fail):
    """``model.compile(...)`` again, with the saved loss and metrics and the restored optimizer.

    ``compile_doc`` is what ``model.compile_config()`` returned: ``compile``'s keyword arguments,
    where a loss may be a name or ``{"class": name, "config": {...}}`` (rebuilt from the loss
    table). Returns the model's optimizer after compiling.
    """
    if not isinstance(compile_doc, dict):
        raise fail(f"malformed compile configuration: {compile_doc!r}")
    kwargs = dict(compile_doc)
    loss = kwargs.get("loss")
    if isinstance(loss, dict):
        kwargs["loss"] = _build(loss, classes["loss"], _Decoder(fail, {}), fail, "compile.loss")
    if optimizer is not None:
        kwargs["optimizer"] = optimizer
    try:
        model.compile(**kwargs)
    except (TypeError, ValueError) as e:
        raise fail(f"cannot compile the rebuilt {type(model).__name__} with the saved "
                   f"configuration {compile_doc!r}: {e}") from e
    compiled = getattr(model, "optimizer", None)
    if optimizer is not None and compiled is not optimizer and isinstance(compiled, Optimizer):
        compiled.load_state_dict(optimizer.state_dict())
    return compiled if isinstance(compiled, Optimizer) else optimizer
