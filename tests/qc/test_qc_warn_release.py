"""QC warn (README step 4): a series that only warns is released and forwarded at once,
never held, and a ``qc`` alert asks for ``review`` at severity warning.

A site protocol file (``qc.protocols``) with warn-only thresholds that every measured image
reaches puts a clean series in warn, whatever the shipped thresholds say of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.agent_proc import AgentProcess
from tests.support.peers import storescu
from tests.support.qc_series import write_series

pytestmark = pytest.mark.integration

WARN_ONLY = {"direction": "high", "warn": -1.0e9, "fail": None}  # every measured value warns
SITE_PROTOCOLS = {
    "schema": "scanner-agent.qc-protocols/1",
    "protocols": [
        {
            "name": "review-every-head-ct",
            "match": {"modality": "CT", "body_part": "HEAD"},
            "metrics": {"noise_hu": WARN_ONLY, "ring_hu": WARN_ONLY},
        }
    ],
}


def feed(agent: AgentProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (agent.storage / "feed.jsonl").read_text().splitlines()]


def test_warned_series_is_released_with_a_review_alert(agent_factory: Any, tmp_path: Path) -> None:
    protocols = tmp_path / "site-protocols.yaml"
    protocols.write_text(yaml.safe_dump(SITE_PROTOCOLS))
    out = tmp_path / "pacs"
    agent = agent_factory(
        qc={"enabled": True, "protocols": str(protocols)},
        forward={"destinations": [{"kind": "folder", "name": "pacs", "path": str(out)}]},
    ).start()
    files = write_series(tmp_path / "s", "clean", 0, n=4)
    storescu(agent.port, files)
    rows = agent.wait_for(
        "SELECT series_uid, state, release_reason, flagged, held_at FROM series WHERE modality = 'CT'",
        lambda r: len(r) == 1 and r[0]["state"] == "forwarded",
        120,
    )
    series_uid = rows[0]["series_uid"]
    assert (rows[0]["release_reason"], rows[0]["flagged"], rows[0]["held_at"]) == (
        "complete",
        0,
        None,
    )
    agent.wait_for(  # the QC report and the key-image KOS follow their source series
        "SELECT state FROM deliveries",
        lambda r: len(r) == 6 and {x[0] for x in r} == {"delivered"},
        60,
    )
    assert len(list(out.rglob("*.dcm"))) == 6, (
        "the 4 images, the QC report and the key images (the warned images) reached the destination"
    )
    docs = feed(agent)
    verdicts = [d["payload"] for d in docs if d["topic"] == f"series/{series_uid}"]
    assert verdicts[0]["qc"]["status"] == "warn" and verdicts[0]["state"] == "released"
    assert {r["code"] for r in verdicts[0]["qc"]["reasons"]} <= {"noise_hu", "ring_hu"}
    alerts = [d["payload"] for d in docs if d["topic"] == "alerts" and d["payload"]["kind"] == "qc"]
    assert [(a["series_uid"], a["action"], a["severity"]) for a in alerts] == [
        (series_uid, "review", "warning")
    ]
    assert "held" not in {
        d["payload"].get("state") for d in docs if d["topic"].startswith("series/")
    }
