"""Triage end to end: a synthetic head CT with a bleed, sent by dcmtk's storescu, raises a
critical triage alert on Mosquitto and reaches Orthanc before an earlier routine series,
followed by its SR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pytest

from models.phantoms import head_slice
from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto, subscriber, unique_prefix
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.orthanc import Orthanc
from tests.support.peers import storescu
from tests.support.triage_helpers import ct_dataset, head_header

pytestmark = [pytest.mark.integration, pytest.mark.anyio]



def bleed_series(folder: Path, n: int = 6) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    hdr = head_header()
    paths = []
    for i in range(n):
        ds = ct_dataset(head_slice(rng, "intraparenchymal"), hdr, i)
        ds.ImagesInAcquisition, ds.AcquisitionNumber = n, 1
        paths.append(folder / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def arrival_order(orthanc: Orthanc) -> list[str]:
    """The SeriesInstanceUID of every stored instance, in the order Orthanc stored them."""
    changes = orthanc.get("/changes?limit=10000")["Changes"]
    new = [c["ID"] for c in sorted(changes, key=lambda c: c["Seq"]) if c["ChangeType"] == "NewInstance"]
    return [orthanc.get(f"/instances/{oid}/simplified-tags")["SeriesInstanceUID"] for oid in new]


async def test_bleed_alerts_and_jumps_the_queue_with_its_sr(
    agent_factory: Any, mosquitto: Mosquitto, orthanc_factory: Any, tmp_path: Path
) -> None:
    orthanc = orthanc_factory()  # ports chosen; started once both series queue up
    prefix = unique_prefix()
    routine = write_ct_series(tmp_path / "chest", 10, images_in_acquisition=10, header=series_header("CHEST", "CHEST"))
    bleed = bleed_series(tmp_path / "head")
    agent: AgentProcess = agent_factory(
        triage={"enabled": True},
        mqtt={"url": mosquitto.url, "topic_prefix": prefix},
        forward={"destinations": [orthanc.destination()], "retry": {"initial_s": 0.2, "max_s": 0.5}},
    ).start()
    async with subscriber(mosquitto.port, f"{prefix}/test-agent/alerts") as sub:
        await anyio.to_thread.run_sync(storescu, agent.port, routine)
        await anyio.to_thread.run_sync(storescu, agent.port, bleed)
        msgs = await sub.wait_for(lambda m: any(x.json()["kind"] == "triage" for x in m), 60)
    alert = next(x.json() for x in msgs if x.json()["kind"] == "triage")
    assert (alert["severity"], alert["action"]) == ("critical", "review")
    await anyio.to_thread.run_sync(
        agent.wait_for, "SELECT state FROM series WHERE derived_from IS NULL",
        lambda r: len(r) == 2 and {x[0] for x in r} == {"released"}, 60,
    )
    orthanc.start()
    await anyio.to_thread.run_sync(
        agent.wait_for, "SELECT state FROM deliveries", lambda r: r and {x[0] for x in r} == {"delivered"}, 120
    )
    rows = agent.query("SELECT series_uid, priority, derived_from FROM series")
    stat = next(r[0] for r in rows if r[1] == "stat" and r[2] is None)
    routine_uid = next(r[0] for r in rows if r[1] == "routine" and r[2] is None)
    stat_reports = [r[0] for r in rows if r[2] == stat]
    assert alert["series_uid"] == stat and stat_reports
    order = arrival_order(orthanc)  # series UID of each instance, in Orthanc's order
    last_stat = max(i for i, uid in enumerate(order) if uid == stat)
    first_routine = min(i for i, uid in enumerate(order) if uid == routine_uid)
    assert last_stat < first_routine, "the stat series reaches the PACS first"
    assert min(i for i, uid in enumerate(order) if uid in stat_reports) > last_stat, "then its SR"
