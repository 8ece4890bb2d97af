"""The cell contract: docs/cells.md's worked example (a new cell in one file, no other file
touched) runs as written, in a fresh process (it registers a class), and the built-in cells
declare what the contract asks."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import elman
from elman import registry
from elman.cells.base import CellEquations, ParamSpec

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "cells.md")


def test_the_worked_example_runs_as_written():
    with open(DOCS, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) == 3
    proc = subprocess.run([sys.executable, "-c", "\n".join(blocks)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("layer", [elman.RNN(3, 4), elman.GRU(3, 4, reset_after=False),
                                   elman.LSTM(3, 4, proj_size=2),
                                   elman.LSTM(3, 4, proj_size=2, peephole=True)])
def test_built_in_cells_fulfil_the_contract(layer):
    eq = layer.eq
    assert isinstance(eq, CellEquations)
    assert eq.kernel.startswith("elman.fast.") and elman.fast.kernels_named(eq.kernel)
    specs = eq.parameters(3, 4, layer.proj_size, True)
    assert all(isinstance(s, ParamSpec) for s in specs)
    # the layer's parameters are the cell's, with the layer's suffix, in the cell's order
    assert [n for n, _ in layer.named_parameters()] == [s.name + "_l0" for s in specs]
    assert [p.data.shape for p in layer.parameters()] == [s.shape for s in specs]
    assert registry.get("module", type(layer).__name__) is type(layer)


def test_the_registry_refuses_a_second_class_under_a_name():
    with pytest.raises(ValueError, match="module 'LSTM' is already elman.recurrent.LSTM"):
        registry.register("module", "LSTM")(type("LSTM", (), {}))
    with pytest.raises(ValueError, match="registry kind must be one of"):
        registry.register("cells")
    assert registry.get("module", "NoSuchLayer") is None


def test_a_cell_may_declare_its_own_parameters():
    """A cell's extra parameter (here a zero-initialised per-unit vector) is created by the
    layer under the cell's name, reaches its steps by that name, and is counted by the memory
    check."""
    from elman.cells.rnn import RNNEquations
    seen = []

    class WithGain(RNNEquations):
        def parameters(self, input_size, hidden_size, proj_size=0, bias=True):
            return super().parameters(input_size, hidden_size, proj_size, bias) + [
                ParamSpec("gain", (hidden_size,), "zeros")]

        def prepare_forward(self, w, H, dtype):
            seen.append(sorted(w))
            return super().prepare_forward(w, H, dtype)

    built = elman.recurrent.RecurrentLayer(WithGain(), 3, 4, num_layers=2, bidirectional=True)
    assert not built.gain_l1_reverse.data.any() and built.gain_l0.data.shape == (4,)
    with elman.fast.use(False):
        built(np.zeros((2, 1, 3), np.float32))
    assert seen[0] == ["bias_hh", "bias_ih", "gain", "weight_hh", "weight_ih"]
