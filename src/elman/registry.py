"""The one table from names to elman's classes: what a name in a checkpoint, a conversion or a
command line may become.

Each class registers itself where it is defined (``@registry.register("module")``); the
readers (:mod:`elman.checkpoint`, :mod:`elman.interop`, the task commands) look names up here
instead of keeping lists of their own, so adding a class is one decorator, not an edit in five
files. A leaf module: it imports nothing from elman, so anything may import it.

Kinds:

``"module"``     every :class:`elman.Module` a checkpoint may rebuild, by class name
``"loss"``       losses by class name; ``"optimizer"``: optimizers by class name
``"recurrent"``  the recurrent layer families by their short name (``"lstm"``, ``"mingru"``):
                 the choices of the commands' ``--cell``; the interop modules look up the
                 families they convert (rnn, gru, lstm) here

>>> from elman import registry
>>> registry.get("recurrent", "gru").__name__
'GRU'
>>> sorted(registry.table("recurrent"))
['gru', 'lstm', 'mingru', 'minlstm', 'rnn']
"""
from __future__ import annotations

__all__ = ["KINDS", "register", "get", "table"]

KINDS = ("module", "loss", "optimizer", "recurrent")

_TABLES: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str | None = None):
    """Class decorator: enter the class under ``name`` (default: its class name) in ``kind``'s
    table. A name is registered once: a second class under the same name is an error."""
    if kind not in _TABLES:
        raise ValueError(f"registry kind must be one of {KINDS}, got {kind!r}")

    def enter(cls: type) -> type:
        key = cls.__name__ if name is None else name
        known = _TABLES[kind].get(key)
        if known is not None and known is not cls:
            raise ValueError(f"registry: {kind} {key!r} is already {known.__module__}."
                             f"{known.__qualname__}")
        _TABLES[kind][key] = cls
        return cls
    return enter


def get(kind: str, name: str) -> type | None:
    """The class registered as ``name`` in ``kind``'s table, or None."""
    return _TABLES[kind].get(name)


def table(kind: str) -> dict[str, type]:
    """A copy of ``kind``'s table, ``{name: class}``."""
    return dict(_TABLES[kind])
