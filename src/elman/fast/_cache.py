"""numba's on-disk cache of the kernels, keyed by the sources of the whole fast package.

numba files a cached kernel under a stamp of its own source file only (a hash of its contents;
its timestamp in older numba). But a kernel inlines and links code from the package's other
files: ``_blas``'s GEMMs, ``_loop``'s step helpers, ``_math``'s ``tanh``, ``_pair``'s spin
loops, constants such as ``cells.layer_norm.EPS``. Change one of those alone (an edit, a
``git pull`` into an editable install) and every cached kernel that uses it was stale, yet
loaded: the old code ran, without a word. Here each kernel's stamp is numba's own plus one
hash of every module of this package and of the modules outside it they import from
(``from ..x import``), so any such change compiles the kernels afresh (numba sees a stamp
that differs from its index's and overwrites the index).

How: a cache locator (numba's hook that says where a function's cache lives and what its
stamp is) put first in numba's list; for functions defined in this package it wraps the
locator numba would have chosen (``NUMBA_CACHE_DIR``, ``__pycache__``, the user's cache
directory), adding the package's hash to the stamp; for any other function it declines, and
numba goes on as before. Every module of this package that compiles with ``cache=True``
imports this one before its decorators run (a test checks every cached kernel's locator).
"""
import functools
import hashlib
import os
import re

from numba.core import caching

__all__ = ["PackageLocator", "package_stamp", "stamped_files"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_ELMAN = os.path.dirname(_HERE)
_OUTSIDE_IMPORT = re.compile(rb"^from \.\.([\w.]+) import", re.MULTILINE)


def stamped_files() -> list:
    """The files whose contents key the kernels' cache: every ``.py`` of this package, and
    each module of elman they import from (``from ..cells.layer_norm import EPS``), sorted."""
    files = {os.path.join(_HERE, name) for name in os.listdir(_HERE) if name.endswith(".py")}
    for path in list(files):
        with open(path, "rb") as f:
            for module in _OUTSIDE_IMPORT.findall(f.read()):
                base = os.path.join(_ELMAN, *module.decode().split("."))
                found = [p for p in (base + ".py", os.path.join(base, "__init__.py"))
                         if os.path.exists(p)]
                files.update(found[:1])
    return sorted(files)


@functools.lru_cache(maxsize=None)
def package_stamp() -> str:
    """sha256 of :func:`stamped_files` (their paths relative to elman, and contents); once per
    process, as numba asks at each kernel's definition."""
    digest = hashlib.sha256()
    for path in stamped_files():
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, _ELMAN).encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


class PackageLocator:
    """numba's cache locator for this package's kernels: the locator numba would have chosen
    (``inner``), with :func:`package_stamp` added to its source stamp."""

    def __init__(self, inner):
        self._inner = inner

    @classmethod
    def from_function(cls, py_func, py_file):
        """A locator for a function defined in this package, or None (numba then asks the
        next locator of its list)."""
        if os.path.dirname(os.path.abspath(py_file)) != _HERE:
            return None
        try:
            package_stamp()
        except OSError:       # sources not readable as files (a zip): numba's stamp alone
            return None
        for other in _locator_classes():
            if other is not cls:
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
        return None

    def get_source_stamp(self):
        return self._inner.get_source_stamp(), package_stamp()

    def __getattr__(self, name):       # the cache path, the disambiguator, _py_file, ...
        return getattr(self._inner, name)


def _impl_class():
    """numba's base of cache implementations, which holds the list of locators
    (``CacheImpl``; ``_CacheImpl`` in older numba)."""
    return getattr(caching, "CacheImpl", None) or caching._CacheImpl


def _locator_classes() -> list:
    return _impl_class()._locator_classes


def _register():
    impl = _impl_class()
    impl._locator_classes = [PackageLocator] + [c for c in impl._locator_classes
                                                if c.__name__ != PackageLocator.__name__]


_register()
