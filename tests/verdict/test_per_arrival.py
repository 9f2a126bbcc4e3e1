"""Per-image QC and triage run as each image arrives; completion only aggregates.

The completion-time fallback (measure or score whatever the arrival path missed) would
hide a dead arrival path, so it is counted (``Judge.qc_fallback_images``,
``Judge.triage_fallback_images``) and logged (``qc fallback: ...``, ``triage fallback: ...``).
The unit test shows the fallback runs when measurements are missing; the integration test
shows it does not run for a series whose images all arrived normally at a real agent.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE

from agent.domain.instances import Instance
from agent.journal.database import Journal
from agent.qc.image_qc import MetricsStore, measure_dataset
from agent.qc.protocols import load_protocols
from agent.receive.received import describe
from agent.receive.spool import Spool
from agent.triage.engine import TriageEngine
from agent.triage.stage import TriageTracker
from agent.verdict.judge import Judge
from tests.support.agent_proc import AgentProcess
from tests.support.qc_series import sha256_of, write_series

N = 4


def _record(journal: Journal, files: list[Path]) -> list[Instance]:
    out = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        inst, info = describe(
            ds, path=str(path), size=path.stat().st_size, sha256=sha256_of(path), version=1,
            received_at=time.time(),
        )  # fmt: skip
        recorded = journal.record_instance(inst, info)
        assert recorded is not None
        out.append(recorded)
    return out


def test_fallback_runs_only_for_what_the_arrival_path_missed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    try:
        store = MetricsStore(journal)
        tracker = TriageTracker(TriageEngine([]), journal)
        judge = Judge(journal, Spool(tmp_path / "spool", min_free_bytes=0), store,
                      load_protocols(), tracker)  # fmt: skip
        arrived = _record(journal, write_series(tmp_path / "arrived", "clean", 0, n=N))
        missed = _record(journal, write_series(tmp_path / "missed", "clean", 0, n=N))
        for inst in arrived:  # what the daemon's per-arrival worker does for each image
            ds = dcmread(inst.path)
            iid = store.instance_id(inst.sop_instance_uid, inst.sha256)
            assert iid is not None
            store.put(iid, measure_dataset(ds))
            tracker.add(inst, ds)

        caplog.set_level(logging.INFO)
        verdict = judge.judge(arrived[0].series_uid)
        assert verdict.qc.metrics["images_measured"] == N
        assert (judge.qc_fallback_images, judge.triage_fallback_images) == (0, 0)
        assert "fallback" not in caplog.text

        verdict = judge.judge(missed[0].series_uid)
        assert verdict.qc.metrics["images_measured"] == N
        assert (judge.qc_fallback_images, judge.triage_fallback_images) == (N, N)
        series = missed[0].series_uid
        assert f"qc fallback: measured {N} images at completion for series {series}" in caplog.text
        assert (
            f"triage fallback: scored {N} images at completion for series {series}" in caplog.text
        )
        assert len(store.of_series(series)) == N  # measured once, then stored
    finally:
        journal.close()


def _metrics_rows(agent: AgentProcess, series_uid: str) -> int:
    try:
        rows = agent.query("SELECT COUNT(*) FROM image_metrics WHERE series_uid = ?", series_uid)
    except Exception:  # the table may not exist yet
        return 0
    return int(rows[0][0])


def _published_verdict(agent: AgentProcess, series_uid: str) -> dict[str, Any]:
    """The series' first verdict in ``feed.jsonl`` (no broker configured)."""
    feed = agent.storage / "feed.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = feed.read_text().splitlines() if feed.exists() else []
        for doc in map(json.loads, lines):
            if doc["topic"] == f"series/{series_uid}":
                return dict(doc["payload"])
        time.sleep(0.1)
    raise AssertionError(f"no verdict for {series_uid} was published\n{agent.log()[-4000:]}")


@pytest.mark.integration
def test_no_fallback_for_a_series_that_arrived_normally(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    # grace_s leaves the in-flight triage of the last image time to finish before completion
    agent = agent_factory(
        qc={"enabled": True}, triage={"enabled": True}, series={"grace_s": 3.0}
    ).start()
    files = write_series(tmp_path / "head", "clean", 0, n=N)
    series_uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", agent.port, ae_title="EDGE")
    assert assoc.is_established
    try:
        for path in files:
            assert assoc.send_c_store(dcmread(path)).Status == 0x0000
        # Keep the association open (so the series cannot complete) while the arrival path
        # works; if it never measures, the release below goes ahead and the fallback shows.
        deadline = time.monotonic() + 60
        while _metrics_rows(agent, series_uid) < N and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        assoc.release()
    verdict = _published_verdict(agent, series_uid)
    assert verdict["qc"]["metrics"]["images_measured"] == N
    assert verdict["triage"] is not None  # the shipped models applied and ran
    fallbacks = [line for line in agent.log().splitlines() if "fallback:" in line]
    assert fallbacks == [], "the per-arrival path missed images:\n" + "\n".join(fallbacks)
