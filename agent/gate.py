"""The forwarding gate: which complete series may leave for the PACS, and where to.

Only released series are forwarded. Until QC exists every complete series is released.
A held series is released by the technologist, or, past ``forward.hold_timeout_s``, by
the clock, flagged: the agent must never be the reason a study does not reach the PACS.
Released instances are queued, durably in the journal, for the destinations the routing
rules choose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
import anyio.to_thread

from agent.config import ForwardConfig
from agent.domain import SeriesComplete, SeriesState
from agent.journal import Journal
from agent.routing import RouteFacts, destinations_for

log = logging.getLogger(__name__)


class ReleaseGate:
    def __init__(
        self, journal: Journal, cfg: ForwardConfig, on_queued: Callable[[], None] = lambda: None
    ) -> None:
        self.journal = journal
        self.cfg = cfg
        self.on_queued = on_queued

    async def __call__(self, done: SeriesComplete) -> SeriesComplete:
        await anyio.to_thread.run_sync(self.on_complete, done.series_uid)
        return done

    def on_complete(self, series_uid: str) -> None:
        """A held series (the technologist held it while it was arriving) stays held."""
        if self.journal.series_state(series_uid) == SeriesState.HELD:
            log.info("series %s complete but held: waiting for the technologist", series_uid)
            return
        self.release(series_uid, "complete", False)

    def release(self, series_uid: str, reason: str, flagged: bool) -> int:
        """Release a series to its routed destinations; returns deliveries queued."""
        row = self.journal.series_row(series_uid) or {}
        facts = RouteFacts(
            modality=row.get("modality", ""),
            body_part=row.get("body_part", ""),
            station_name=row.get("station_name", ""),
            calling_aet=row.get("calling_aet", ""),
            series_description=row.get("series_description", ""),
            priority=row.get("priority", "routine"),
        )
        destinations = destinations_for(self.cfg, facts)
        queued = self.journal.release_series(series_uid, destinations, reason, flagged=flagged)
        log.info(
            "series %s released (%s%s) to %s: %d deliveries queued",
            series_uid, reason, ", flagged" if flagged else "", ", ".join(destinations) or "nowhere",
            queued,
        )  # fmt: skip
        self.on_queued()
        return queued

    async def expire_holds(self, interval_s: float = 1.0) -> None:
        """Release, flagged, every series held longer than the hold timeout."""
        while True:
            cutoff = time.time() - self.cfg.hold_timeout_s
            for uid in await anyio.to_thread.run_sync(self.journal.held_before, cutoff):
                log.warning(
                    "series %s held past %.0f s: forwarding it flagged",
                    uid,
                    self.cfg.hold_timeout_s,
                )
                await anyio.to_thread.run_sync(self.release, uid, "hold-timeout", True)
            await anyio.sleep(interval_s)
