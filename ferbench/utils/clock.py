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
# A thread waiting for the GIL or a busy core is late by milliseconds; a stopped process by as
# long as it was stopped.  Only lateness beyond SLACK_S counts, so a pause under 2 s is not
# left out, and a thread starved for a while never makes a trial look faster than it ran.
SLACK_S = 2.0

_paused = 0.0
_last_tick = 0.0
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _watch() -> None:
    global _paused, _last_tick
    while True:
        time.sleep(TICK_S)
        now = time.perf_counter()
        with _lock:
            late = now - _last_tick - TICK_S
            if late > SLACK_S:
                _paused += late
            _last_tick = now


def paused_s() -> float:
    """Seconds this process has spent stopped since the clock was first read (a pause that
    just ended counts at once, before the watching thread has woken)."""
    global _thread, _last_tick
    with _lock:
        if _thread is None:
            _last_tick = time.perf_counter()
            _thread = threading.Thread(target=_watch, name="ferbench-pause-clock", daemon=True)
            _thread.start()
        pending = time.perf_counter() - _last_tick - TICK_S
        return _paused + (pending if pending > SLACK_S else 0.0)


def running_time() -> float:
    """Like time.perf_counter(), minus the time the process was stopped."""
    return time.perf_counter() - paused_s()
