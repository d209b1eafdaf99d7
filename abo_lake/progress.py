"""Progress of a conversion job within files, not only file by file.

A worker converting a file reports what fraction of it is done (:class:`FileProgress`, as
``distributed`` events on a topic of the job's own); the chunk-encoding tasks of a write are
counted by a dask callback (:class:`TaskFraction`). The job's client turns the events into
bytes of source done (:class:`BytesDone`), so the bar moves while one large file converts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dask.callbacks import Callback

__all__ = ["BytesDone", "FileProgress", "TaskFraction"]

#: Seconds between two events of one file (the first and the last are always sent).
INTERVAL = 0.5


class FileProgress:
    """Report the fraction of ``source`` done on ``topic``, from a ``distributed`` worker.

    Does nothing outside a worker or without a topic. Fractions only grow; events are sent at
    most every :data:`INTERVAL` seconds, except the first and those with ``force=True``.
    """

    def __init__(self, source: str, topic: str | None) -> None:
        self.source = source
        self.topic = topic
        self._worker: Any = None
        if topic:
            try:
                from distributed import get_worker

                self._worker = get_worker()
            except (ImportError, ValueError):
                pass
        self._sent = 0.0
        self._last = -INTERVAL

    def __call__(self, fraction: float, *, force: bool = False) -> None:
        if self._worker is None or fraction <= self._sent:
            return
        now = time.monotonic()
        if force or now - self._last >= INTERVAL:
            self._worker.log_event(self.topic, {"source": self.source, "fraction": fraction})
            self._sent, self._last = fraction, now


class TaskFraction(Callback):
    """A dask callback calling ``report(finished tasks / all tasks)`` as tasks finish, on
    the local schedulers (threads, sync) a conversion runs its writes with."""

    def __init__(self, report: Callable[[float], None]) -> None:
        super().__init__()
        self._report = report
        self._total = 1
        self._done = 0

    def _start_state(self, dsk: Any, state: dict) -> None:
        self._total = max(1, len(dsk))
        self._done = 0

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict, worker_id: Any) -> None:
        self._done += 1
        self._report(self._done / self._total)


class BytesDone:
    """The client's side: bytes of source done, from the workers' events and from finished
    files, given to ``show(done, total)`` (a progress bar's update, a notebook widget...).

    Thread-safe: events arrive on the client's event loop, finished files in the caller's
    thread.
    """

    def __init__(self, sizes: dict[str, int], show: Callable[[int, int], None]) -> None:
        self.sizes = sizes
        self.total = sum(sizes.values())
        self._show = show
        self._done: dict[str, int] = {}
        self._lock = threading.Lock()

    def event(self, event: tuple[float, dict[str, Any]]) -> None:
        """Handle one ``(time, {"source", "fraction"})`` event of a worker."""
        msg = event[1]
        if msg.get("source") in self.sizes:
            self._advance(msg["source"], min(1.0, float(msg["fraction"])))

    def finished(self, source: str) -> None:
        """A file is done (converted, resumed or failed)."""
        self._advance(source, 1.0)

    def _advance(self, source: str, fraction: float) -> None:
        with self._lock:
            want = int(self.sizes[source] * fraction)
            if want <= self._done.get(source, 0):
                return
            self._done[source] = want
            self._show(sum(self._done.values()), self.total)
