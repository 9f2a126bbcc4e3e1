"""MRD end to end: a streamed Cartesian acquisition (8 coils, 256², GRAPPA R=2) reaches
Orthanc as an MR series through the agent, and its verdict appears on Mosquitto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto, subscriber, unique_prefix
from tests.support.mrd_streams import cartesian_slice, grappa_lines, header, send_stream
from tests.support.mri_phantoms import phantom_kspace_256
from tests.support.orthanc import Orthanc
from tests.support.peers import free_port, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]



async def test_streamed_acquisition_reaches_pacs_with_verdict(
    agent_factory: Any, mosquitto: Mosquitto, orthanc: Orthanc, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    mrd_port = free_port()
    agent: AgentProcess = agent_factory(
        mrd={"bind": "127.0.0.1", "port": mrd_port},
        mqtt={"url": mosquitto.url, "topic_prefix": prefix},
        forward={"destinations": [orthanc.destination()]},
    ).start()
    await anyio.to_thread.run_sync(wait_for_port, mrd_port, 180)
    k = np.asarray(phantom_kspace_256())
    async with subscriber(mosquitto.port, f"{prefix}/test-agent/series/#") as sub:
        images = await anyio.to_thread.run_sync(
            lambda: send_stream(
                mrd_port, header(256, 8, accel=2), cartesian_slice(k, grappa_lines(256, 2, 24))
            )
        )
        assert len(images) == 1, "the image also comes back over the connection"
        (oid,) = await anyio.to_thread.run_sync(orthanc.wait_for_count, 1, 120)
        msgs = await sub.wait_for(
            lambda m: any(x.json().get("modality") == "MR" for x in m if x.payload), 60
        )
    tags = orthanc.get(f"/instances/{oid}/simplified-tags")
    assert tags["Modality"] == "MR" and tags["Rows"] == "256"
    verdict = next(x.json() for x in msgs if x.payload)
    assert verdict["schema"] == "scanner-agent.verdict/1" and verdict["instances"] == 1
    assert verdict["series_uid"] == tags["SeriesInstanceUID"]
    assert agent.query("SELECT calling_aet FROM instances")[0][0] == "SCANNER-AGENT"
