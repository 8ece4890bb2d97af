"""The README's first command, `python -m elman`, runs and beats the persistence forecast."""
import re

from elman.__main__ import main


def test_demo_trains_and_beats_persistence(capsys):
    assert main([]) == 0                       # the defaults, exactly as the README runs it
    text = capsys.readouterr().out
    found = re.search(r"test RMSE: LSTM ([\d.]+) degC, persistence ([\d.]+) degC", text)
    assert found, text
    model, persistence = map(float, found.groups())
    assert model < persistence
