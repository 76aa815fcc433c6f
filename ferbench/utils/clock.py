"""A clock that does not count the time the process was stopped (SIGSTOP ... SIGCONT).

Background trainings are paused with SIGSTOP while something else is timed on the same cores;
a trial's recorded time (epochs, validation, test: what is compared with the speedrun budget)
should then not grow by the pause.  A daemon thread ticks every TICK_S; a tick that arrives
more than SLACK_S late means the whole process was not running, and the lateness is counted
as paused.  CPU contention is not a pause: a busy machine still counts (pause, don't share).
"""

from __future__ import annotations

import threading
import time

TICK_S = 0.25
SLACK_S = 0.75  # a GIL-bound or loaded thread is late by milliseconds, a stopped one by seconds

_paused = 0.0
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _watch() -> None:
    global _paused
    last = time.perf_counter()
    while True:
        time.sleep(TICK_S)
        now = time.perf_counter()
        late = now - last - TICK_S
        if late > SLACK_S:
            with _lock:
                _paused += late
        last = now


def paused_s() -> float:
    """Seconds this process has spent stopped since the clock was first read."""
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_watch, name="ferbench-pause-clock", daemon=True)
        _thread.start()
    with _lock:
        return _paused


def running_time() -> float:
    """Like time.perf_counter(), minus the time the process was stopped."""
    return time.perf_counter() - paused_s()
