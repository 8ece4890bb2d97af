"""The README's first command, `python -m elman`, runs and beats the persistence forecast."""
import re

import pytest

from elman.__main__ import main


def test_demo_trains_and_beats_persistence(capsys):
    assert main([]) == 0                       # the defaults, exactly as the README runs it
    text = capsys.readouterr().out
    found = re.search(r"test RMSE: LSTM ([\d.]+) degC, persistence ([\d.]+) degC", text)
    assert found, text
    model, persistence = map(float, found.groups())
    assert model < persistence


@pytest.mark.parametrize("flag, value", [("--hidden", "0"), ("--epochs", "-1"),
                                         ("--lookback", "0"), ("--batch-size", "0"),
                                         ("--lr", "nan"), ("--seed", "-1")])
def test_demo_refuses_bad_options_with_a_usage_error(capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main([flag, value])
    assert e.value.code == 2
    assert f"error: {flag} must be" in capsys.readouterr().err
