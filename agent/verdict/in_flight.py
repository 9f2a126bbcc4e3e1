"""Images handed to per-image QC and triage and not yet done, counted per series.

A series can complete (by count, by a released association) the moment its last image is
stored, while that image is still in a worker. The judge waits briefly for such images
instead of measuring them a second time at completion; a worker that is stuck does not
stop the verdict, which then measures what is missing (the logged, counted fallback).
"""

from __future__ import annotations

import threading
from collections import Counter

WAIT_S = 10.0  # the longest the judge waits for a series' in-flight images


class InFlight:
    def __init__(self) -> None:
        self._count: Counter[str] = Counter()
        self._changed = threading.Condition()

    def started(self, series_uid: str) -> None:
        with self._changed:
            self._count[series_uid] += 1

    def done(self, series_uid: str) -> None:
        with self._changed:
            self._count[series_uid] -= 1
            if self._count[series_uid] <= 0:
                del self._count[series_uid]
                self._changed.notify_all()

    def pending(self, series_uid: str) -> int:
        with self._changed:
            return self._count.get(series_uid, 0)

    def wait(self, series_uid: str, timeout: float = WAIT_S) -> bool:
        """Block until none of the series' images is in flight; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: series_uid not in self._count, timeout)
