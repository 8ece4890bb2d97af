"""Choosing between two ways of running the same call by timing both as they run.

Where the faster of two ways depends on the moment, a fixed rule either leaves speed unused or
loses it part of the time. The case here: a batch of one sequence with every step on two
threads (:func:`elman.timeloop.sequence_forward_pair`) against one thread, at sizes where the
two threads win by 1.1-1.4x while the machine behaves, and lose by as much while its two CPUs
run slower together than apart (on a virtual machine, for seconds or minutes at a time: the
host's doing, nothing a process sees coming). A :class:`MeasuredChoice` keeps the last few
times of each way (per unit of work: per step) and picks the way whose median is lower; two
calls in every :data:`EXPLORE_EVERY` take the other way, so that a change of phase is seen.
The price of being right over time is that those two calls take the slower way.

Medians, not means: one call that the operating system interrupted (a 10x outlier) must not
turn the choice. A few samples per way (:data:`WINDOW`): a change of phase shows within a few
calls of the way in use, and within a few explorations of the other. A call right after a
call of the other way is not a sample: it pays for the switch (a partner thread asleep since
the other way ran wakes up while the call runs), which a run of calls the same way does not;
so the ways are tried in runs of two calls, the first of which only warms up.
"""
from __future__ import annotations

__all__ = ["MeasuredChoice", "EXPLORE_EVERY", "WINDOW", "FIRST_SAMPLES"]

#: every this many calls, the way not chosen (its times may be from an earlier phase), for a
#: run of two calls
EXPLORE_EVERY = 32
#: the recent times kept per way (their median decides)
WINDOW = 5
#: samples of each way taken in turn (runs of two calls) before the medians decide
FIRST_SAMPLES = 3


class MeasuredChoice:
    """The faster of two ways (0 and 1), from their recent times.

    ``pick()`` says which way the next call takes; the caller times it and hands the time
    (per unit of work, so that calls of different sizes compare) to ``record(way, time)``.
    Until each way has :data:`FIRST_SAMPLES` times they take turns, in runs of two calls;
    then the lower median of the last :data:`WINDOW` wins (way 0 on a tie), except for two
    calls in every :data:`EXPLORE_EVERY`, which take the other. A call whose way differs from
    the last call's is not recorded (see the module's docstring). Not thread-safe, nor needs
    to be: two threads calling the same layer at once lose at most a sample."""

    __slots__ = ("_times", "_calls", "_last", "trial")

    def __init__(self):
        self._times = ([], [])      # the last WINDOW times of way 0 and of way 1
        self._calls = 0
        self._last = None           # the way of the last recorded call
        #: whether the last pick was a trial (the first turns, or an exploration of the way
        #: not chosen) rather than the faster way: a caller keeps what the chosen way needs
        #: ready through a trial (the pair's partner spinning, see elman.recurrent)
        self.trial = True

    def pick(self) -> int:
        """The way (0 or 1) the next call should take."""
        self._calls += 1
        first, second = self._times
        if len(first) < FIRST_SAMPLES or len(second) < FIRST_SAMPLES:
            self.trial = True
            return (self._calls - 1) // 2 % 2 if len(first) == len(second) \
                else int(len(second) < len(first))
        faster = 1 if _median(second) < _median(first) else 0
        self.trial = self._calls % EXPLORE_EVERY in (0, 1)
        return 1 - faster if self.trial else faster

    def record(self, way: int, time: float) -> None:
        """A time of way ``way`` (0 or 1), per unit of work; not kept when the call before
        took the other way."""
        switched, self._last = way != self._last, way
        if switched:
            return
        times = self._times[way]
        times.append(time)
        if len(times) > WINDOW:
            del times[0]

    def medians(self) -> tuple:
        """The two ways' current medians (None where a way has no time yet): what decides."""
        return tuple(_median(t) if t else None for t in self._times)


def _median(values: list) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
