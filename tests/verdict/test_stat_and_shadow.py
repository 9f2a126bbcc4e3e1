"""A stat finding never waits behind a QC hold; a shadow model never alerts or reprioritises.

Both tests pin the model's decision by its thresholds (a copy of the shipped ICH model whose
stat threshold every score reaches), so they test the gate and the modes, not the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import dcmread

from agent.config import parse_config
from agent.domain.instances import SeriesState
from agent.journal.database import Journal
from agent.qc.image_qc import MetricsStore
from agent.qc.protocols import load_protocols
from agent.receive.received import describe
from agent.receive.spool import Spool
from agent.triage.engine import TriageEngine
from agent.triage.sr import triage_sr
from agent.triage.stage import TriageTracker
from agent.verdict.gate import ReleaseGate
from agent.verdict.judge import Judge, alerts_of
from tests.support.agent_proc import AgentProcess
from tests.support.orthanc import Orthanc
from tests.support.peers import storescu
from tests.support.qc_series import sha256_of, write_series
from tests.support.triage_helpers import SHIPPED, copy_model

FAIL_ALL = {"direction": "high", "warn": -1.0e9, "fail": -1.0e9}  # every measured value fails
FAILING_HEAD_QC = {
    "schema": "scanner-agent.qc-protocols/1",
    "protocols": [
        {
            "name": "fail-every-head-ct",
            "match": {"modality": "CT", "body_part": "HEAD"},
            "metrics": {"noise_hu": FAIL_ALL, "ring_hu": FAIL_ALL},
        }
    ],
}


def always_stat_models(tmp_path: Path) -> Path:
    """A models folder holding the shipped ICH model with every score at or above stat."""
    folder = copy_model("ich", tmp_path, source=SHIPPED)
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["thresholds"]["haemorrhage"] = {"stat": 0.0, "urgent": 0.0}
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return folder.parent


def _feed(agent: AgentProcess) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (agent.storage / "feed.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_a_qc_failed_stat_series_reaches_orthanc_while_still_held(
    agent_factory: Any, orthanc: Orthanc, tmp_path: Path
) -> None:
    protocols = tmp_path / "failing.yaml"
    protocols.write_text(yaml.safe_dump(FAILING_HEAD_QC))
    agent = agent_factory(
        qc={"enabled": True, "protocols": str(protocols)},
        triage={"enabled": True, "models_dir": str(always_stat_models(tmp_path))},
        forward={"destinations": [orthanc.destination()], "hold_timeout_s": 3600},
    ).start()
    files = write_series(tmp_path / "head", "clean", 0, n=4)
    storescu(agent.port, files)
    agent.wait_for(
        "SELECT d.state FROM deliveries d JOIN instances i ON i.id = d.instance_id "
        "JOIN series s ON s.series_uid = i.series_uid WHERE s.derived_from IS NULL",
        lambda r: len(r) == 4 and {x[0] for x in r} == {"delivered"}, 120,
    )  # fmt: skip
    (row,) = agent.query(
        "SELECT series_uid, state, priority, flagged, expedited FROM series "
        "WHERE derived_from IS NULL"
    )
    assert (row["state"], row["priority"], row["flagged"], row["expedited"]) == (
        SeriesState.HELD, "stat", 1, 1,
    )  # fmt: skip
    stored = {s["MainDicomTags"]["SeriesInstanceUID"]: len(s["Instances"])
              for s in orthanc.get("/series?expand")}  # fmt: skip
    assert stored.get(row["series_uid"]) == 4, "all four images are in the PACS"
    wanted = {("qc", "critical", "repeat"), ("triage", "critical", "review")}
    deadline = time.monotonic() + 30
    while True:  # the alerts reach the feed through the outbox, a moment after the verdict
        alerts = [d["payload"] for d in _feed(agent) if d["topic"] == "alerts"]
        kinds = {(a["kind"], a["severity"], a["action"]) for a in alerts}
        if wanted <= kinds or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ("qc", "critical", "repeat") in kinds, "the technologist still gets the QC alert"
    assert ("triage", "critical", "review") in kinds
    dest = orthanc.destination()["name"]
    assert f"forwarded flagged to {dest} while QC holds it" in agent.log()


def _record_series(journal: Journal, files: list[Path]) -> str:
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        inst, info = describe(ds, path=str(path), size=path.stat().st_size,
                              sha256=sha256_of(path), version=1, received_at=time.time())  # fmt: skip
        assert journal.record_instance(inst, info) is not None
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


@pytest.mark.parametrize("mode", ["active", "shadow"])
def test_shadow_mode_records_the_finding_without_alert_or_priority(
    tmp_path: Path, mode: str
) -> None:
    models = always_stat_models(tmp_path)
    cfg = parse_config(yaml.safe_dump({
        "triage": {"device": "cpu", "models_dir": str(models),
                   "models": [{"name": "ich", "mode": mode}]},
        "forward": {"destinations": [{"kind": "folder", "name": "pacs", "path": str(tmp_path)}]},
    }))  # fmt: skip
    journal = Journal.open(tmp_path / "journal.sqlite")
    try:
        tracker = TriageTracker(TriageEngine.start(cfg.triage, None), journal)
        spool = Spool(tmp_path / "spool", min_free_bytes=0)
        judge = Judge(journal, spool, MetricsStore(journal), load_protocols(), tracker)
        gate = ReleaseGate(journal, cfg.forward, judge=judge)
        uid = _record_series(journal, write_series(tmp_path / "head", "clean", 0, n=3))
        journal.mark_complete(uid, "test", time.time())
        verdict = gate.on_complete(uid)
        assert verdict is not None and verdict.triage is not None
        (finding,) = verdict.triage.findings
        assert (finding.label, finding.mode, finding.priority) == ("haemorrhage", mode, "stat")
        triage_alerts = [a for a in alerts_of(verdict) if a.kind == "triage"]
        row = journal.series_row(uid) or {}
        sr = triage_sr(verdict.triage, dcmread(journal.instances_of(uid)[0].path),
                       [("1.2.840.10008.5.1.4.1.1.2", finding.slices[0])])  # fmt: skip
        text = " ".join(str(e.value) for e in sr.iterall() if e.keyword == "TextValue")
        if mode == "active":
            assert verdict.triage.priority == "stat" and row["priority"] == "stat"
            assert [a.severity for a in triage_alerts] == ["critical"]
            assert "Shadow mode" not in text
        else:
            assert verdict.triage.priority == "routine" and row["priority"] == "routine"
            assert triage_alerts == [], "a shadow model raises no alert"
            assert "Shadow mode (ich@" in text, "the SR says the finding was recorded only"
            assert verdict.to_dict()["triage"]["findings"][0]["mode"] == "shadow"
    finally:
        journal.close()


def test_a_mode_for_a_model_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    from agent.errors import ConfigError, ModelError
    from agent.triage.models import check_triage

    cfg = parse_config("triage: {device: cpu, models: [{name: icj, mode: shadow}]}")
    with pytest.raises(ModelError) as err:
        TriageEngine.start(cfg.triage, None)
    assert "triage.models[0].name: no model 'icj'" in str(err.value.problems)
    with pytest.raises(ConfigError) as bad:
        check_triage(cfg, "site.yaml")
    assert "no model 'icj'" in str(bad.value)
    with pytest.raises(ConfigError) as twice:
        parse_config("triage: {models: [{name: ich}, {name: ich, mode: shadow}]}")
    assert "each model may be named once" in str(twice.value)
