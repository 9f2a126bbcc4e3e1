"""``scanner-agent demo``: the whole loop on one machine, nothing installed beyond the package.

A simulated scanner sends three head CT studies to a real agent (embedded default config, a
temporary spool, the local folder as the PACS): a clean one, one with ring artifacts (QC
fails: held, alerted, then forwarded flagged when the short demo hold timeout passes) and,
when the shipped phantom generator is present, one with a bleed (a stat triage alert). The
console feed is printed as it happens. It exits 0 only when every image sent and its reports
reached the PACS stand-in. Synthetic data only; nothing here is clinical.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import anyio
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from scipy import ndimage

from agent.config import AgentConfig, load_config
from agent.journal.database import connect
from agent.qc import sr as qc_sr
from agent.receive.receiver import Receiver
from agent.triage import sr as triage_sr
from agent.triage.models import models_dir

HOLD_S = 12.0  # the demo's hold timeout, so the held study is seen to go out flagged


def demo_config(root: Path) -> AgentConfig:
    doc = load_config().model_dump(mode="json")
    doc["storage"].update(path=str(root), min_free_bytes=1 << 20)
    doc["dicom"].update(bind="127.0.0.1", port=_free_port())
    doc["forward"]["hold_timeout_s"] = HOLD_S
    doc["triage"]["models_dir"] = None
    doc["web"] = None  # the demo's agent is temporary; a real one may hold the console's port
    return AgentConfig.model_validate(doc)


Serve = Callable[..., Awaitable[None]]
# Result objects by their SeriesDescription: each sent series must get one of each kind.
REPORT_KINDS = {qc_sr.SERIES_DESCRIPTION: "QC", triage_sr.SERIES_DESCRIPTION: "triage"}


class Sent(NamedTuple):
    """One series the simulated scanner sent (or tried to): what must reach the PACS."""

    study: str
    series: str
    description: str
    sops: list[str]


def expected_reports(cfg: AgentConfig) -> tuple[str, ...]:
    """The report kinds each series must get: QC when on, triage when models are there."""
    triage = cfg.triage.enabled and any(models_dir(cfg.triage).glob("*/manifest.yaml"))
    return (("QC",) if cfg.qc.enabled else ()) + (("triage",) if triage else ())


def run_demo(seconds: float, serve: Serve) -> int:
    """``serve`` is :func:`agent.daemon.serve`, passed in so this room never imports the top."""
    with tempfile.TemporaryDirectory(prefix="scanner-agent-demo-") as tmp:
        cfg = demo_config(Path(tmp))
        print(f"demo: agent {cfg.agent_id}, spool {tmp}, PACS stand-in {tmp}/outbox/local")
        print("demo: not for clinical use; every image here is synthetic\n")
        stop = threading.Event()
        watcher = threading.Thread(target=_follow_feed, args=(Path(tmp), stop), daemon=True)
        watcher.start()
        sent: list[Sent] = []

        def on_ready(receiver: Receiver) -> None:
            threading.Thread(
                target=_scanner, args=(cfg, receiver.port, seconds, sent), daemon=True
            ).start()

        anyio.run(lambda: serve(cfg, on_ready=on_ready))
        stop.set()
        watcher.join(2)
        return summary(Path(tmp), sent, expected_reports(cfg))


def _scanner(cfg: AgentConfig, port: int, seconds: float, sent: list[Sent]) -> None:
    """The simulated scanner: three studies, then wait for the PACS, then stop the agent."""
    try:
        studies = _studies(cfg)
        for body_part, description, stack in studies:
            print(f"scanner: sending {description} ({len(stack)} slices)")
            _send(port, cfg.dicom.ae_title, (body_part, description), stack, sent)
            time.sleep(1.0)
        deadline = time.monotonic() + seconds
        # every study and each of its reports (built just after its verdict) must be out
        series = len(studies) * (1 + len(expected_reports(cfg)))
        while time.monotonic() < deadline and not _all_delivered(cfg.storage_path, series):
            time.sleep(0.5)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the agent drains and stops, as under systemd


def _studies(cfg: AgentConfig) -> list[tuple[str, str, np.ndarray]]:
    """(body part, description, HU slices): routine, rings (QC fails), bleed (triage stat)."""
    phantoms = _phantoms(cfg)
    if phantoms is None:  # no generator beside the models: two plain studies
        return [
            ("HEAD", "HEAD ROUTINE", _plain_head()),
            ("HEAD", "HEAD RINGS", _with_rings(_plain_head())),
        ]
    rng = np.random.default_rng(7)
    chest = [_scan(phantoms.body_slice(rng, "CHEST"))] * 6  # one slice: a steady demo
    bleed = [
        np.roll(_scan(phantoms.head_slice(rng, "intraparenchymal")), (48, 36), (0, 1))
        for _ in range(6)
    ]
    return [
        ("CHEST", "CHEST ROUTINE", np.stack(chest)),
        ("CHEST", "CHEST RINGS", _with_rings(np.stack(chest))),
        ("HEAD", "HEAD BLEED", np.stack(bleed)),
    ]


def _scan(slice_hu: Any) -> np.ndarray:
    """A phantom slice (128x128, 2 mm) brought to a scanner's 512x512 at 0.5 mm."""
    img = np.asarray(slice_hu, np.float32)
    big: np.ndarray = ndimage.zoom(img, 512 / img.shape[0], order=1).astype(np.float32)
    return big


def _plain_head() -> np.ndarray:
    """A plain head (skull, brain, ventricles) when the phantom generator is not installed."""
    yy, xx = np.mgrid[:128, :128].astype(np.float32) - 64
    r = np.hypot(xx / 52, yy / 60)
    img = np.full((128, 128), -1000.0, np.float32)
    img[r < 1.0] = 1000.0
    img[r < 0.9] = 32.0
    img[(np.hypot((xx - 8) / 6, yy / 14) < 1) | (np.hypot((xx + 8) / 6, yy / 14) < 1)] = 6.0
    return np.repeat(_scan(img)[None], 6, axis=0)


def _with_rings(stack: np.ndarray) -> np.ndarray:
    """Ring artifacts as a bad detector channel makes them: bands about the scan centre."""
    half = stack.shape[-1] / 2
    yy, xx = np.mgrid[: stack.shape[-2], : stack.shape[-1]].astype(np.float32) - half
    rings = 60.0 * np.sin(np.hypot(xx, yy) * 0.33)
    out: np.ndarray = stack + rings[None] * (stack > -500)
    return out


def _send(port: int, aet: str, what: tuple[str, str], stack: np.ndarray, sent: list[Sent]) -> None:
    """Send one series; it is recorded in ``sent`` first, so a refusal shows as missing."""
    study, series = generate_uid(), generate_uid()
    slices = [_slice(hu, study, series, what, i, len(stack)) for i, hu in enumerate(stack)]
    sent.append(Sent(study, series, what[1], [str(ds.SOPInstanceUID) for ds in slices]))
    ae = AE(ae_title="DEMO-CT")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        print("scanner: the agent refused the association")
        return
    for ds in slices:
        assoc.send_c_store(ds)
    assoc.release()


def _slice(
    hu: np.ndarray, study: str, series: str, what: tuple[str, str], i: int, n: int
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, study
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "DEMO", "Demo^Patient", f"DEMO{series[-4:]}"
    ds.Modality, (ds.BodyPartExamined, ds.SeriesDescription) = "CT", what
    ds.SeriesNumber, ds.InstanceNumber, ds.ImagesInAcquisition, ds.AcquisitionNumber = (
        1,
        i + 1,
        n,
        1,
    )
    ds.ImagePositionPatient, ds.ImageOrientationPatient = (
        [-128.0, -128.0, -5.0 * i],
        [1, 0, 0, 0, 1, 0],
    )
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 5.0
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16).tobytes()
    return ds


def _phantoms(cfg: AgentConfig) -> ModuleType | None:
    """The training phantom generator shipped beside the models, when it is there."""
    path = models_dir(cfg.triage).parent / "models" / "phantoms.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("scanner_agent_phantoms", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def _all_delivered(root: Path, series: int) -> bool:
    from agent.operator.status import read_status

    doc = read_status(root / "journal.sqlite", ["local"])
    by_state: dict[str, int] = doc["series"]["by_state"]
    done = by_state.get("forwarded", 0) + by_state.get("quarantined", 0)
    return done >= series and int(doc["destinations"]["local"]["queued"]) == 0


def _follow_feed(root: Path, stop: threading.Event) -> None:
    feed = root / "feed.jsonl"
    seen = 0
    while not stop.is_set():
        if feed.exists():
            lines = feed.read_text().splitlines()
            for line in lines[seen:]:
                _print_feed(json.loads(line))
            seen = len(lines)
        time.sleep(0.3)


def _print_feed(entry: dict[str, Any]) -> None:
    payload = entry.get("payload")
    if isinstance(payload, str):
        payload = json.loads(payload)
    if not isinstance(payload, dict):
        return
    if payload.get("schema", "").startswith("scanner-agent.alert"):
        reasons = "; ".join(r.get("message", "") for r in payload.get("reasons", []))[:120]
        print(f"ALERT   {payload['severity'].upper():8s} {payload['kind']:7s} action={payload['action']:6s} "
              f"{payload.get('series_description', '')}: {reasons}")  # fmt: skip
    elif payload.get("schema", "").startswith("scanner-agent.verdict"):
        triage = payload.get("triage") or {}
        print(f"VERDICT {payload.get('series_description', '')[:20]:20s} state={payload['state']:9s} "
              f"qc={payload['qc']['status']:4s} triage={triage.get('priority', '-'):7s} "
              f"deliveries={payload.get('deliveries')}")  # fmt: skip
    sys.stdout.flush()


def summary(root: Path, sent: Sequence[Sent], reports: Sequence[str]) -> int:
    """Print what reached the PACS stand-in and each series' fate; 0 only if nothing is missing."""
    outbox = root / "outbox" / "local"
    count = sum(1 for _ in outbox.rglob("*.dcm")) if outbox.exists() else 0
    print(
        f"\ndemo: {count} objects reached the PACS stand-in (images and the QC and triage reports)"
    )
    for line in _release_lines(root / "journal.sqlite"):
        print(f"demo: {line}")
    missing = missing_objects(outbox, sent, reports)
    for line in missing:
        print(f"demo: MISSING {line}")
    return 1 if missing else 0


def missing_objects(outbox: Path, sent: Sequence[Sent], reports: Sequence[str]) -> list[str]:
    """One line per image or report that should be in ``outbox`` and is not."""
    if not sent:
        return ["the scanner sent nothing"]
    found = _reports_in(outbox)
    missing = []
    for s in sent:
        absent = [u for u in s.sops if not (outbox / s.study / s.series / f"{u}.dcm").exists()]
        if absent:
            missing.append(f"{s.description}: {len(absent)} of {len(s.sops)} images")
        kinds = found.get(s.series, set())
        missing += [f"{s.description}: its {kind} report" for kind in reports if kind not in kinds]
    return missing


def _reports_in(outbox: Path) -> dict[str, set[str]]:
    """Source series UID -> the kinds of report in ``outbox`` that reference it."""
    found: dict[str, set[str]] = {}
    for path in outbox.rglob("*.dcm") if outbox.exists() else ():
        ds = dcmread(path, stop_before_pixels=True)
        kind = REPORT_KINDS.get(str(ds.get("SeriesDescription", "")))
        for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []) if kind else []:
            for ref in study.get("ReferencedSeriesSequence", []):
                found.setdefault(str(ref.SeriesInstanceUID), set()).add(str(kind))
    return found


def _release_lines(journal: Path) -> list[str]:
    """Each scanned series' final state, whether it went out flagged, why it was released, and
    how long after its last image it was all delivered."""
    if not journal.exists():
        return []
    conn = connect(journal, readonly=True)
    try:
        rows = conn.execute(
            """SELECT s.series_description, s.state, s.flagged, s.release_reason,
                      MAX(d.delivered_at) - s.last_received_at, s.expedited
               FROM series s LEFT JOIN instances i ON i.series_uid = s.series_uid
               LEFT JOIN deliveries d ON d.instance_id = i.id
               WHERE s.derived_from IS NULL GROUP BY s.series_uid ORDER BY s.first_received_at"""
        ).fetchall()
    finally:
        conn.close()
    return [
        f"{r[0]}: {r[1]}{', flagged' if r[2] else ''} ({r[3] or 'not released'})"
        f"{', stat: sent while held' if r[5] else ''}"
        f"{f', delivered {r[4]:.1f} s after its last image' if r[4] is not None else ''}"
        for r in rows
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
