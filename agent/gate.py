"""The forwarding gate: decides which complete series may leave for the PACS.

Until QC exists every complete series is released: it is marked ``released`` and its
instances are queued, durably in the journal, for every configured destination.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from agent.domain import SeriesComplete
from agent.journal import Journal

log = logging.getLogger(__name__)


class ReleaseGate:
    def __init__(self, journal: Journal, destinations: Sequence[str]) -> None:
        self.journal = journal
        self.destinations = list(destinations)

    async def __call__(self, done: SeriesComplete) -> SeriesComplete:
        queued = await anyio.to_thread.run_sync(
            self.journal.release_series, done.series_uid, self.destinations
        )
        log.info("series %s released: %d deliveries queued", done.series_uid, queued)
        return done
