"""The examples run as documented and do what they say."""
import importlib.util
import os

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed000_both_ways_beat_persistence(capsys):
    result = _load("seed000_weather").main([])
    assert result["explicit_loop"] < result["persistence"]
    assert result["sequential_fit"] < result["persistence"]
    assert "test RMSE: explicit loop" in capsys.readouterr().out
