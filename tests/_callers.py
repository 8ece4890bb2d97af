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
