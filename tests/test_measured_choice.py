"""elman.measured_choice: the faster of two ways, from their recent times."""
import pytest

from elman.measured_choice import EXPLORE_EVERY, FIRST_SAMPLES, WINDOW, MeasuredChoice


def _run(choice, times, calls):
    """``calls`` calls, each taking the picked way and recording ``times[way]``; returns the
    ways taken."""
    ways = []
    for _ in range(calls):
        way = choice.pick()
        choice.record(way, times[way])
        ways.append(way)
    return ways


def _settled(choice, times):
    """Calls until each way has its first samples; returns how many it took."""
    calls = 0
    while min(len(t) for t in choice._times) < FIRST_SAMPLES:
        _run(choice, times, 1)
        calls += 1
        assert calls < 100
    return calls


def test_first_calls_take_turns_in_runs_of_two_then_the_faster_way_wins():
    choice = MeasuredChoice()
    ways = _run(choice, (2.0, 1.0), 4 * FIRST_SAMPLES)
    assert ways == [0, 0, 1, 1] * FIRST_SAMPLES              # runs of two, in turn
    assert choice.medians() == (2.0, 1.0)                    # one sample per run of two
    assert [len(t) for t in choice._times] == [FIRST_SAMPLES] * 2
    ways = _run(choice, (2.0, 1.0), 4 * EXPLORE_EVERY)
    others = [i + 4 * FIRST_SAMPLES + 1 for i, w in enumerate(ways) if w == 0]  # call numbers
    assert len(others) == 2 * 4                              # a run of two per EXPLORE_EVERY
    assert all(n % EXPLORE_EVERY in (0, 1) for n in others)


def test_a_switch_is_not_a_sample():
    """The first call of a run after the other way pays for the switch: not recorded."""
    choice = MeasuredChoice()
    choice.record(0, 5.0)                                    # (nothing before: a switch too)
    choice.record(1, 9.0)
    choice.record(0, 7.0)
    assert choice.medians() == (None, None)
    choice.record(0, 3.0)
    choice.record(0, 4.0)
    assert choice.medians() == (3.5, None)


def test_way_zero_on_a_tie_and_when_it_is_faster():
    choice = MeasuredChoice()
    start = _settled(choice, (1.0, 1.0))
    ways = _run(choice, (1.0, 1.0), EXPLORE_EVERY - 2 - start % EXPLORE_EVERY)
    assert ways == [0] * len(ways) and len(ways) > 0
    choice = MeasuredChoice()
    start = _settled(choice, (1.0, 3.0))
    assert _run(choice, (1.0, 3.0), 3 * EXPLORE_EVERY).count(1) == 2 * 3


def test_a_change_of_phase_turns_the_choice_both_ways():
    """Way 1 fast, then slow (a slow-together phase): within a few calls way 0 takes over;
    then fast again: the explorations find it and way 1 comes back."""
    choice = MeasuredChoice()
    _run(choice, (2.0, 1.0), 50)
    ways = _run(choice, (2.0, 3.0), 10)
    assert ways[-5:] == [0] * 5
    ways = _run(choice, (2.0, 1.0), WINDOW * EXPLORE_EVERY)
    assert ways[-5:] == [1] * 5


def test_one_outlier_does_not_turn_it():
    """A call the operating system interrupted (10x) is one sample of five: the median holds."""
    choice = MeasuredChoice()
    _run(choice, (2.0, 1.0), 40)
    if choice._last != 1:
        _run(choice, (2.0, 1.0), 3)
    choice.record(1, 10.0)
    assert choice.medians()[1] == 1.0
    assert 1 in (choice.pick(), choice.pick(), choice.pick())   # (two may explore)


def test_window_keeps_the_last_times():
    choice = MeasuredChoice()
    for t in range(11):
        choice.record(0, float(t))                           # (the first: a switch)
    assert choice.medians() == (8.0, None)                   # median of 6..10
    for t in (9.0, 4.0, 2.0):
        choice.record(1, t)
    assert choice.medians() == (8.0, pytest.approx(3.0))


def test_trials_are_the_first_turns_and_the_explorations():
    """``trial``: true for the first turns and each exploration of the way not chosen, false
    for every call of the chosen way (what a caller keeps ready for it depends on that)."""
    choice = MeasuredChoice()
    trials = []
    for _ in range(4 * FIRST_SAMPLES + 3 * EXPLORE_EVERY):
        way = choice.pick()
        trials.append((way, choice.trial))
        choice.record(way, (1.0, 2.0)[way])
    assert all(trial for _, trial in trials[:4 * FIRST_SAMPLES])
    later = trials[4 * FIRST_SAMPLES:]
    assert [way for way, trial in later if trial] == [1] * 2 * 3    # explorations of way 1
    assert all(way == 0 for way, trial in later if not trial)
