"""``scanner-agent inspect`` and the daemon's series_verdict: the same verdict for the same files."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent.journal.database import Journal
from agent.operator.inspect import inspect_paths
from agent.qc.image_qc import MetricsStore
from agent.qc.protocols import load_protocols
from agent.qc.verdict import series_verdict
from agent.receive.received import describe
from tests.support.cli import scanner_agent
from tests.support.qc_series import sha256_of, write_series

ROOT = Path(__file__).resolve().parents[2]
REAL = ("693_UNCI.dcm", "MR2_UNCI.dcm", "RG1_UNCI.dcm")


def _real_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in REAL:
        shutil.copy(get_testdata_file(name, download=False), folder / name)
    (folder / "notes.txt").write_text("not DICOM\n")
    return folder


def _inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return scanner_agent("inspect", *args)


def _series_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def test_inspect_json_prints_one_verdict_per_series(tmp_path: Path) -> None:
    folder = _real_folder(tmp_path / "real")
    # The real files' QC status hangs on threshold tuning; these two series' does not.
    known = {
        _series_uid(write_series(tmp_path / "clean", "clean", 0, n=1)[0]): "pass",
        _series_uid(write_series(tmp_path / "ring", "ring", 3, n=1)[0]): "fail",
    }
    run = _inspect(str(folder), str(tmp_path / "clean"), str(tmp_path / "ring"), "--json")
    assert run.returncode == 0, run.stderr
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(docs) == 5
    uids = {_series_uid(folder / n) for n in REAL}
    assert {d["series_uid"] for d in docs} == uids | set(known)
    for d in docs:
        assert d["schema"] == "scanner-agent.verdict/1"
        assert d["state"] == "complete" and d["deliveries"] == {}
        # the shipped CT body-part model applies to the CT; nothing applies to the MR and CR
        if d["modality"] == "CT":
            assert d["triage"]["status"] == "ok" and d["triage"]["body_part"]["predicted"]
        else:
            assert d["triage"] is None
        assert d["instances"] == 1 and d["modality"] in {"CT", "MR", "CR"}
        assert d["qc"]["metrics"]["images_measured"] == 1
        for r in d["qc"]["reasons"]:
            assert set(r) == {"code", "message", "value", "threshold"}
    assert {d["series_uid"]: d["qc"]["status"] for d in docs if d["series_uid"] in known} == known
    assert "notes.txt" in run.stderr  # reported, not fatal


def test_inspect_text_and_nothing_found(tmp_path: Path) -> None:
    write_series(tmp_path / "ring", "ring", 3, n=2)
    run = _inspect(str(tmp_path / "ring"))
    assert run.returncode == 0, run.stderr
    assert "QC fail" in run.stdout and "ring_hu" in run.stdout
    (triage,) = [line for line in run.stdout.splitlines() if line.startswith("  triage ")]
    assert "haemorrhage" in triage and "body part HEAD" in triage, triage
    (tmp_path / "empty").mkdir()
    run = _inspect(str(tmp_path / "empty"))
    assert run.returncode == 1 and "no DICOM series" in run.stderr


def _journal_with(tmp_path: Path, files: list[Path]) -> Journal:
    journal = Journal.open(tmp_path / "journal.sqlite")
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        inst, info = describe(
            ds, path=str(path), size=path.stat().st_size, sha256=sha256_of(path), version=1,
            received_at=time.time(),
        )  # fmt: skip
        journal.record_instance(inst, info)
    return journal


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("created", "last_image_at", "state")}


def test_series_verdict_matches_inspect(tmp_path: Path) -> None:
    files = [
        *write_series(tmp_path / "clean", "clean", 0, n=3),
        *write_series(tmp_path / "ring", "ring", 3, n=3),
        *(_real_folder(tmp_path / "real").glob("*.dcm")),
    ]
    protocols = load_protocols()
    offline, _ = inspect_paths(
        [tmp_path / "clean", tmp_path / "ring", tmp_path / "real"], protocols
    )
    journal = _journal_with(tmp_path, files)
    try:
        store = MetricsStore(journal)
        ids = {}
        for path in files[:3]:  # as the daemon does per arrival, for some of the images
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            iid = store.instance_id(str(ds.SOPInstanceUID), sha256_of(path))
            assert iid is not None
            ids[iid] = store.measure_and_store(iid, path)
        for v in offline:
            daemon = series_verdict(journal, v.series_uid, protocols, state="held", store=store)
            assert daemon.state == "held" and daemon.last_image_at is not None
            assert _comparable(daemon.to_dict()) == _comparable(v.to_dict())
        assert {v.qc.status for v in offline} >= {"pass", "fail"}
        for iid, m in ids.items():  # stored measurements are read back, not re-measured
            assert store.get(iid) == m
        assert len(store.of_series(offline[0].series_uid)) == 3
        with pytest.raises(KeyError):
            series_verdict(journal, "1.2.3.4", protocols, state="complete")
    finally:
        journal.close()
