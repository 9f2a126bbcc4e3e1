"""Triage in the daemon: each image is scored as it arrives (in the compute workers); at
completion the series' scores become the Verdict's ``triage``. Accumulators live in memory;
whatever the arrival path missed (a restart, a full queue) is scored from the spool then,
logged as ``triage fallback: scored N images at completion for series X`` and counted in
``fallback_images``, so a dead arrival path shows."""

from __future__ import annotations

import logging
import threading

from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.domain.instances import Instance
from agent.domain.verdicts import Triage
from agent.journal.database import Journal
from agent.triage.engine import SeriesTriage, TriageEngine

log = logging.getLogger(__name__)


class TriageTracker:
    def __init__(self, engine: TriageEngine, journal: Journal) -> None:
        self.engine = engine
        self.journal = journal
        self._series: dict[str, SeriesTriage] = {}
        self._lock = threading.Lock()
        self.fallback_images = 0  # images scored at completion instead of on arrival

    def add(self, inst: Instance, ds: Dataset) -> None:
        """Score one arriving image, already read (blocking: call it from a worker thread)."""
        self._accumulator(inst.series_uid).add(ds)

    def finish(self, series_uid: str) -> tuple[Triage | None, SeriesTriage]:
        """The series' triage, scoring any stored image not yet seen; never raises."""
        with self._lock:
            acc = self._series.pop(series_uid, None) or self.engine.series()
        seen = {uid for _, uid in acc.instances}
        missed = [
            i for i in self.journal.instances_of(series_uid) if i.sop_instance_uid not in seen
        ]
        for inst in missed:
            acc.add(dcmread(inst.path))
        if missed:
            with self._lock:
                self.fallback_images += len(missed)
            log.info(
                "triage fallback: scored %d images at completion for series %s",
                len(missed), series_uid,
            )  # fmt: skip
        return acc.result(), acc

    def _accumulator(self, series_uid: str) -> SeriesTriage:
        with self._lock:
            acc = self._series.get(series_uid)
            if acc is None:
                acc = self._series[series_uid] = self.engine.series()
            return acc
