"""Reading and hand-editing checkpoint files in tests: the hostile-file tests build their bad
files from good ones with these."""
import json
import zipfile

import numpy as np


def members(path) -> dict:
    """Every member of a checkpoint as an array, and the JSON document as a dict."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    doc = json.loads(str(arrays.pop("__elman__")[()]))
    return {"arrays": arrays, "doc": doc}


def write_zip(path, content: dict, allow_pickle=False) -> None:
    """Write ``{name: array or raw bytes}`` as a zip of .npy members (our own np.savez)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in content.items():
            with zf.open(name + ".npy", "w") as f:
                if isinstance(value, bytes):
                    f.write(value)
                else:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=allow_pickle)


def rewrite(path, out, doc=None, arrays=None) -> None:
    """A copy of the checkpoint ``path`` at ``out`` with its JSON and/or arrays replaced."""
    m = members(path)
    doc = m["doc"] if doc is None else doc
    arrays = m["arrays"] if arrays is None else arrays
    write_zip(out, {"__elman__": np.array(json.dumps(doc)), **arrays})


def with_extra(path, out, **changes) -> None:
    """A copy of the checkpoint ``path`` at ``out`` whose ``extra`` has ``changes`` applied."""
    doc = members(path)["doc"]
    doc["extra"].update(changes)
    rewrite(path, out, doc=doc)


def with_settings(path, out, **changes) -> None:
    """A copy of the checkpoint ``path`` at ``out`` whose saved settings
    (``extra["settings"]``) have ``changes`` applied."""
    doc = members(path)["doc"]
    doc["extra"]["settings"].update(changes)
    rewrite(path, out, doc=doc)
