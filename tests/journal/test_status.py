"""`scanner-agent status` follows the contract, read from a live agent's journal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.cli import scanner_agent
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import storescu


def status(agent: AgentProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    return scanner_agent("status", *extra, config=agent.config_path, timeout=60, check=True)


@pytest.mark.integration
def test_status_json_contract(agent: AgentProcess, tmp_path: Path) -> None:
    empty = json.loads(status(agent, "--json").stdout)
    assert empty["instances"] == {"total": 0, "by_state": {}}
    storescu(agent.port, write_ct_series(tmp_path / "s", 5))
    agent.wait_series_state("forwarded")
    doc = json.loads(status(agent, "--json").stdout)
    assert doc["instances"] == {"total": 5, "by_state": {"processed": 5}}
    assert doc["series"] == {"total": 1, "by_state": {"forwarded": 1}}
    local = doc["destinations"]["local"]
    assert (local["queued"], local["delivered"], local["quarantined"]) == (0, 5, 0)
    assert local["oldest_undelivered_s"] is None
    assert len(list((agent.storage / "outbox" / "local").rglob("*.dcm"))) == 5
    text = status(agent).stdout
    assert "instances: 5 (processed 5)" in text and "destination local: queued 0, delivered 5" in text
