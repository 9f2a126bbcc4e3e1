"""Reconstruction stage: projection data in, a CT image series out, into the same pipeline.

When a series of CT projection data (DICOM-CT-PD, or a sinogram in Raw Data Storage) is
complete, it is reconstructed in a worker thread; the images are stored like received ones
and fed back to the assembler, so QC, triage and forwarding treat them like any series.
The projection series itself passes on unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
from pydicom import dcmread

from agent.domain.instances import Instance, SeriesComplete
from agent.journal.database import Journal
from agent.receive.local_ingest import store_dataset
from agent.receive.spool import Spool
from agent.recon.ct_projection import (
    group_projections,
    is_projection_data,
    reconstruct,
    to_ct_series,
)
from kernels.device import Device

log = logging.getLogger(__name__)

Feed = Callable[[Instance], Awaitable[None]]
Alert = Callable[[str, str], Awaitable[None]]


class ProjectionRecon:
    def __init__(
        self, journal: Journal, spool: Spool, device: Device, feed: Feed, alert: Alert
    ) -> None:
        self.journal = journal
        self.spool = spool
        self.device = device
        self.feed = feed
        self.alert = alert

    async def __call__(self, done: SeriesComplete) -> SeriesComplete:
        try:
            made = await anyio.to_thread.run_sync(self._reconstruct, done.series_uid)
        except ValueError as exc:  # the kernels' and the reader's word for unusable input
            await self.alert("recon.failed", f"series {done.series_uid}: {exc}")
            return done
        for inst in made:
            await self.feed(inst)
        return done

    def _reconstruct(self, series_uid: str) -> list[Instance]:
        instances = self.journal.instances_of(series_uid)
        if not instances or not is_projection_data(
            dcmread(instances[0].path, stop_before_pixels=True)
        ):
            return []
        datasets = [dcmread(i.path) for i in instances]
        volume = reconstruct(group_projections(datasets), device=self.device)
        images = to_ct_series(volume, datasets)
        stored = [s for ds in images if (s := store_dataset(ds, self.spool, self.journal))]
        log.info(
            "series %s: reconstructed %d CT images from %d projections",
            series_uid,
            len(stored),
            len(datasets),
        )
        return stored
