"""``scanner-agent inspect PATH...``: QC offline on files and folders, one Verdict per series.

Files are grouped by SeriesInstanceUID, every image is measured (:func:`measure_file`,
in a few threads: the Numba kernels release the GIL), and each series is evaluated under
its matched protocol by :func:`agent.qc.verdict.build_verdict`, the function the daemon's
:func:`agent.qc.verdict.series_verdict` uses, so both give the same QC for the same files.
The state is ``complete``, deliveries are empty and triage is null (no model yet).

Files that are not DICOM, or lack the UIDs to group them, are reported and skipped.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.domain.verdicts import Reason, Triage, Verdict
from agent.operator.paths import walk
from agent.qc.image_qc import ImageMeasurement, measure_file
from agent.qc.protocols import Protocols
from agent.qc.series_qc import SeriesFacts
from agent.qc.verdict import build_verdict
from agent.receive.received import header_text
from agent.triage.engine import TriageEngine


@dataclass
class SeriesFiles:
    facts: SeriesFacts
    files: dict[str, Path] = field(default_factory=dict)  # by SOP Instance UID


@dataclass
class Scan:
    series: dict[str, SeriesFiles] = field(default_factory=dict)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def scan(paths: Iterable[Path]) -> Scan:
    """Read headers and group files by series; the first file of a series gives its facts."""
    out = Scan()
    for path in walk(paths):
        try:
            ds = dcmread(path, stop_before_pixels=True)
            sop, series, study = (header_text(ds, k) for k in ("SOPInstanceUID",
                                  "SeriesInstanceUID", "StudyInstanceUID"))  # fmt: skip
        except Exception as exc:  # reported, not fatal
            out.unreadable.append((path, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        if not (sop and series and study):
            out.unreadable.append((path, "not a DICOM image: SOP/Series/Study UID missing"))
            continue
        group = out.series.get(series)
        if group is None:
            group = out.series[series] = SeriesFiles(_facts(ds, study, series))
        group.files.setdefault(sop, path)
    return out


def _facts(ds: Dataset, study: str, series: str) -> SeriesFacts:
    return SeriesFacts(
        study_uid=study,
        series_uid=series,
        modality=header_text(ds, "Modality"),
        body_part=header_text(ds, "BodyPartExamined"),
        series_description=header_text(ds, "SeriesDescription"),
        accession_number=header_text(ds, "AccessionNumber"),
        station_name=header_text(ds, "StationName"),
    )


def inspect_paths(
    paths: Sequence[Path], protocols: Protocols, *, workers: int | None = None,
    triage: TriageEngine | None = None, notes: Mapping[str, list[tuple[str, str]]] | None = None,
) -> tuple[list[Verdict], list[tuple[Path, str]]]:  # fmt: skip
    """Verdicts (in the order series were first seen) and the unreadable files; ``notes``:
    per series UID, what reconstruction assumed (warning reasons in the verdict)."""
    found = scan(paths)
    jobs = [p for s in found.series.values() for p in s.files.values()]
    n = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n) as pool:
        results: dict[Path, ImageMeasurement] = dict(
            zip(jobs, pool.map(measure_file, jobs), strict=True)
        )
    verdicts = [
        build_verdict(
            s.facts,
            [results[p] for p in s.files.values()],
            protocols,
            state="complete",
            instances=len(s.files),
            notes=[Reason(c, m) for c, m in (notes or {}).get(s.facts.series_uid, [])],
        )
        for s in found.series.values()
    ]
    if triage is not None:
        verdicts = [
            replace(v, triage=series_triage(triage, s.files.values()))
            for v, s in zip(verdicts, found.series.values(), strict=True)
        ]
    return verdicts, found.unreadable


def series_triage(engine: TriageEngine, files: Iterable[Path]) -> Triage | None:
    """The series' triage, scored slice by slice as the daemon scores arriving images."""
    acc = engine.series()
    for path in files:
        acc.add(dcmread(path))
    return acc.result()


def format_text(v: Verdict) -> str:
    desc = f" {v.series_description!r}" if v.series_description else ""
    head = f"{v.series_uid}  {v.modality or '?'}{desc}  {v.instances} image(s)  QC {v.qc.status}"
    lines = [head, *(f"    {r.message}" for r in v.qc.reasons)]
    if v.triage is not None:
        lines.append(f"  triage {triage_text(v.triage)}")
    return "\n".join(lines)


def triage_text(t: Triage) -> str:
    """One line: the priority and each finding, or why there is no score."""
    if t.status == "not_applicable":
        return "not applicable: " + "; ".join(t.reasons)
    findings = ", ".join(
        f"{f.label} {f.score:.2f} {f.priority}{' (shadow)' if f.mode == 'shadow' else ''} "
        f"[{f.model}]"
        for f in t.findings
    )
    text = f"{t.priority}" + (f": {findings}" if findings else "")
    if t.status == "unavailable" or t.reasons:
        text += f" ({t.status}: {'; '.join(t.reasons)})"
    if t.body_part is not None and t.body_part.predicted:
        text += f"; body part {t.body_part.predicted} ({t.body_part.score:.2f})"
    return text


def run(
    paths: Sequence[Path], protocols: Protocols, *, as_json: bool,
    out: TextIO = sys.stdout, err: TextIO = sys.stderr, triage: TriageEngine | None = None,
) -> int:  # fmt: skip
    """Print the verdicts; 0 when at least one series was evaluated, else 1.

    MRD/ISMRMRD files and CT projection data are reconstructed first, as the daemon would.
    """
    from agent.operator.inspect_raw import expand_raw  # reconstruction pulls in the MRI/CT stacks

    with tempfile.TemporaryDirectory(prefix="scanner-agent-inspect-") as work:
        notes: dict[str, list[tuple[str, str]]] = {}
        images, failed = expand_raw(paths, Path(work), notes)
        verdicts, unreadable = inspect_paths(images, protocols, triage=triage, notes=notes)
    unreadable = failed + unreadable
    for path, why in unreadable:
        print(f"scanner-agent inspect: skipped {path}: {why}", file=err)
    for v in verdicts:
        print(v.to_json() if as_json else format_text(v), file=out)
    if not verdicts:
        print("scanner-agent inspect: no DICOM series found", file=err)
        return 1
    return 0
