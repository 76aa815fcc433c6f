"""Run a generator ahead on a worker thread, so that two stages of a loop use both cores.

The live loop's first stage (read a frame, find its faces) and its second (classify, draw,
write) each leave a core mostly idle: OpenCV, torch and ONNX Runtime release the GIL while
they compute, so the worker thread's detection overlaps the main thread's classification.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

_END = object()


class RunAhead(Iterator):
    """Iterate `items` on a worker thread, up to `depth` items ahead of the consumer.  An
    exception raised by `items` is raised again in the consumer; `close()` stops the worker
    (also on Ctrl-C or an early `break`: the worker never blocks on a full queue for good).
    `release` runs on the worker once it has stopped: what `items` reads (a capture) is freed
    only after its last read, even when `close()` gave up waiting for a read that hangs."""

    def __init__(
        self,
        items: Iterable,
        depth: int = 4,
        name: str = "ferbench-ahead",
        release: Callable[[], None] | None = None,
    ):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._release = release
        self._thread = threading.Thread(
            target=self._work, args=(iter(items),), name=name, daemon=True
        )
        self._thread.start()

    def _work(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer as it is
            self._put((_END, error))
        finally:
            if self._release is not None:
                self._release()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self):
        while True:
            try:  # short waits: a blocking get would hold off Ctrl-C
                item, error = self._queue.get(timeout=0.05)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise StopIteration from None
                continue
            if error is not None:
                raise error
            if item is _END:
                raise StopIteration
            return item

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the worker and wait for it (its current item finishes first); False when it
        is still busy after `timeout` (it then stops, and releases, after that item)."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()
