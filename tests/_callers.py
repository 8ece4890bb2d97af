"""Calls from several threads at once, for the tests of what threads share (the pair's
partner): each callable runs ``repeats`` times in a thread of its own; a hang or any error is
reported in the test's own thread."""
import threading


def from_threads(calls, repeats: int = 60, timeout: float = 120) -> None:
    """Run every callable of ``calls`` ``repeats`` times, each in its own thread, all at once;
    raise the first error any of them raised, or AssertionError where one is still running
    after ``timeout`` seconds."""
    errors = []

    def caller(call):
        try:
            for _ in range(repeats):
                call()
        except BaseException as error:      # (raised below, in the test's own thread)
            errors.append(error)

    workers = [threading.Thread(target=caller, args=(call,)) for call in calls]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=timeout)
    assert not any(w.is_alive() for w in workers), "a caller hung"
    if errors:
        raise errors[0]


def taken_with_two_threads(monkeypatch, name: str, layer, x) -> tuple:
    """``(alone, both)``: ``layer(x)``'s outputs and states under no_grad with no two threads
    free, then with two, after asserting that ``elman.recurrent.<name>`` (a two-thread path)
    ran in the second call only."""
    import elman
    from elman import recurrent, threads
    seen = []
    original = getattr(recurrent, name)
    monkeypatch.setattr(recurrent, name, lambda *args: seen.append(1) or original(*args))
    monkeypatch.setattr(threads, "two_threads_free", lambda: False)

    def flat(result):
        out, state = result
        return [out] + (list(state) if isinstance(state, tuple) else [state])

    with elman.no_grad():
        alone = flat(layer(x))
        assert seen == []
        monkeypatch.setattr(threads, "two_threads_free", lambda: True)
        both = flat(layer(x))
        assert seen == [1]
    return alone, both
