"""Calls from several threads at once, for the tests of what threads share (the pair's
partner): each callable runs ``repeats`` times in a thread of its own; a hang or any error is
reported in the test's own thread. And what those tests share: their layers, their results
as one list, the count of calls that took a two-thread path."""
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


def spread_layer(make, dtype):
    """``make(dtype)``, a recurrent layer, with every parameter drawn uniformly from
    [-0.5, 0.5) (seed 7: wide enough that every gate matters), in ``eval()`` mode."""
    import numpy as np
    layer = make(dtype)
    rng = np.random.default_rng(7)
    for p in layer.parameters():
        p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape)
    return layer.eval()


def flat(result) -> list:
    """A recurrent layer's ``(out, state)`` as ``[out, h_n]`` or ``[out, h_n, c_n]``."""
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def counted(monkeypatch, name: str, *modules) -> list:
    """``elman.timeloop.<name>`` replaced in ``elman.recurrent`` (and in ``modules``) by a
    twin that records the shape of each call's input (its third argument) in the list
    returned."""
    from elman import recurrent, timeloop
    calls = []
    original = getattr(timeloop, name)

    def twin(*args):
        calls.append(args[2].shape)
        return original(*args)
    for module in (recurrent, *modules):
        monkeypatch.setattr(module, name, twin)
    return calls


def taken_with_two_threads(monkeypatch, name: str, layer, x) -> tuple:
    """``(alone, both)``: ``layer(x)``'s outputs and states under no_grad with no two threads
    free, then with two, after asserting that ``elman.recurrent.<name>`` (a two-thread path)
    ran in the second call only."""
    import elman
    from elman import threads
    seen = counted(monkeypatch, name)
    monkeypatch.setattr(threads, "two_threads_free", lambda: False)
    with elman.no_grad():
        alone = flat(layer(x))
        assert seen == []
        monkeypatch.setattr(threads, "two_threads_free", lambda: True)
        both = flat(layer(x))
        assert len(seen) == 1
    return alone, both


def agree_from_threads(layers, inputs, repeats: int = 60) -> None:
    """Each ``layers[k](inputs[k])`` under no_grad from a thread of its own, all at once,
    ``repeats`` times (:func:`from_threads`), each output equal to the NumPy path's to float32
    rounding (the same layer may appear twice: its calls then run at once too)."""
    import numpy as np
    import elman
    from elman import fast
    with elman.no_grad(), fast.use(False):
        want = [layer(x)[0] for layer, x in zip(layers, inputs)]

    def caller(k):
        def call():
            with elman.no_grad():
                np.testing.assert_allclose(layers[k](inputs[k])[0], want[k], rtol=1e-5,
                                           atol=1e-6)
        return call
    from_threads([caller(k) for k in range(len(layers))], repeats)
