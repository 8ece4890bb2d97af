"""Every Python block of the README runs as written, each in a fresh process in an empty
directory (they write their files there), as a newcomer would paste it. The Keras-style block
downloads IMDB, so it runs in tests/test_keras_face.py on a small archive made in the test."""
import os
import re
import subprocess
import sys

import pytest

from _torch import require

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def test_the_readme_has_python_blocks():
    assert len(_blocks()) >= 5


@pytest.mark.parametrize("line, block", [b for b in _blocks() if "imdb.load_data" not in b[1]],
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_block_runs(tmp_path, line, block):
    if "import torch" in block or "elman, torch" in block:
        require("torch")
    proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"README.md line {line}:\n{proc.stderr[-3000:]}"
