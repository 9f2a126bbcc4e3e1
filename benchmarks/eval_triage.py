"""Held-out, series-level evaluation of the shipped ICH triage model, through the agent.

    NUMBA_CACHE_DIR=/root/.numba_cache PYTHONPATH=. python benchmarks/eval_triage.py

Options: ``--normal N`` (normal series per group, with and without calcifications; default
150), ``--per-kind N`` (bleed series per kind; default 60), ``--seed S``, ``--json PATH``.
About 6 minutes on two CPU cores at the defaults. Writes /tmp/triage_eval_report.md (the
markdown table it prints) and ``--json`` (default benchmarks/eval/eval_triage.json).

Every series is a list of pydicom data sets (CT, BodyPartExamined HEAD, PixelSpacing,
SliceThickness, RescaleSlope/Intercept, int16 pixels) scored by the agent's own runtime:
``TriageEngine.start(TriageConfig(), None)``, ``acc = engine.series()``, ``acc.add(ds)``,
``acc.result()``, so preprocessing, aggregation, thresholds (and the applicability gate,
once the engine has it) are exactly the agent's.

Held out from training and calibration (models/ich/train.py, calibrate.py) by seed AND by
generator parameters (:data:`HELD_OUT` against ``Acquisition()``): wider field of view (190-300 mm),
noisier scans, more sharp kernels, bigger, smaller, more shifted and more tilted heads, more
streaks, more small and faint bleeds; 6-24 slices 3-10 mm apart (training validation:
8-16, 4-8 mm); and the pixels reach the agent at a 256 or 512 matrix (rendered, upsampled,
then given the scanner's noise at that matrix and rounded to int16), not at the render grid.
Training (ich 0.4-0.6) draws wider ranges of field of view (180-320 mm), noise and head size
(x0.78-1.2) than both, and a third of its slices pass through a 192 or 384 matrix: never the
256 or 512 used here, nor its noise factor. Shift, tilt, streaks, kernels, bleed mix and
series make-up stay outside training's ranges or proportions. The second validation split
(calibrate.py, seed 20240603) uses training's ranges, so the same holds for it.

Each bleed series' row also carries its scan's noise (``noise_hu``) and :func:`visibility`,
and the summary the bleeds >= 5 mm flagged in fixed visibility bands, so that misses can be
read as faint-in-noise or not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import TriageConfig  # noqa: E402
from agent.triage.engine import TriageEngine  # noqa: E402
from models.ich.data import REAL_HEADS, Series, make_series, partial_volume  # noqa: E402
from models.phantoms import ICH_KINDS, Acquisition, body_slice, head_slice  # noqa: E402
from tests.support.dicom_factory import new_instance  # noqa: E402

SEED = 777_001  # training uses 20240601, validation 20240602
HELD_OUT = Acquisition(fov_mm=(190.0, 300.0), noise_hu=(1.0, 3.6), sharp=0.5,
                       head_scale=(0.8, 1.16), shift_mm=20.0, tilt=0.45, streaks=0.6,
                       small=0.4, faint=0.4)  # fmt: skip
SIZE_BUCKETS = (("<5 mm", 0, 5), ("5-10 mm", 5, 10), (">10 mm", 10, 1e9))
# Bands of :func:`visibility`, fixed before looking (Rose: a known disc needs an SNR of ~5).
VISIBILITY_BANDS = (("<5", 0, 5), ("5-10", 5, 10), ("10-20", 10, 20), (">=20", 20, 1e9))
BRAIN_HU = 30.0  # nominal brain behind a bleed (the generator draws 23-41 HU)
REPORT = Path("/tmp/triage_eval_report.md")
JSON_OUT = ROOT / "benchmarks" / "eval" / "eval_triage.json"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def header(description: str, body_part: str = "HEAD") -> Dataset:
    hdr = Dataset()
    hdr.StudyInstanceUID, hdr.SeriesInstanceUID = generate_uid(), generate_uid()
    hdr.FrameOfReferenceUID = generate_uid()
    hdr.PatientID, hdr.PatientName, hdr.AccessionNumber = "EVAL-ICH", "Eval^Head", "EVAL1"
    hdr.SeriesNumber, hdr.SeriesDescription = 3, description
    if body_part:
        hdr.BodyPartExamined = body_part
    return hdr


def ct_image(hu: np.ndarray, hdr: Dataset, index: int, pixel_mm: float, thickness: float,
             image_type: str = "ORIGINAL\\PRIMARY\\AXIAL") -> Dataset:  # fmt: skip
    """An axial CT slice of ``hu`` (int16, intercept -1024) in the series of ``hdr``."""
    ds = new_instance(CTImageStorage)
    for elem in hdr:
        ds.add(elem)
    ds.Modality, ds.ImageType, ds.InstanceNumber = "CT", image_type, index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    corner = -pixel_mm * hu.shape[1] / 2
    ds.ImagePositionPatient = [corner, corner, -index * thickness]
    ds.PixelSpacing, ds.SliceThickness = [pixel_mm, pixel_mm], round(thickness, 2)
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16).tobytes()
    return ds


def at_matrix(hu: np.ndarray, matrix: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A noise-free render brought to the scanner's matrix, with that matrix's noise."""
    f = matrix / hu.shape[0]
    big = ndimage.zoom(hu, f, order=1).astype(np.float32)
    white = rng.standard_normal(big.shape).astype(np.float32)
    sigma = noise * f * rng.uniform(0.8, 1.3)
    out: np.ndarray = big + sigma * (0.6 * white + 1.2 * ndimage.gaussian_filter(white, 0.8 * f))
    return out


def visibility(s: Series) -> float | None:
    """A rough Rose-style index of the bleed on its clearest slice: its contrast over a nominal
    brain, diluted by partial volume, over the scan's noise per render pixel, times the square
    root of its area in render pixels. It ignores texture and correlated noise, so it ranks
    bleeds by how visible they are; it does not say what an ideal observer would find."""
    if s.bleed is None or s.head is None:
        return None
    contrast = partial_volume(s.bleed, s.thickness_mm) * (s.bleed.hu - BRAIN_HU)
    area = math.pi / 4 * (s.bleed.size_mm / s.pixel_mm) ** 2
    return round(contrast / s.head.noise * math.sqrt(area), 2)


def score(engine: TriageEngine, datasets: list[Dataset]) -> dict[str, Any]:
    acc = engine.series()
    for ds in datasets:
        acc.add(ds)
    triage = acc.result()
    if triage is None:
        return {"status": "no model applies", "priority": "-", "score": None}
    ich = [f for f in triage.findings if f.model.startswith("ich@")]
    return {"status": triage.status, "priority": triage.priority,
            "score": ich[0].score if ich else None, "reasons": list(triage.reasons)}  # fmt: skip


def synthetic_rows(engine: TriageEngine, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(args.seed)
    plan = [("none", True)] * args.normal + [("none", False)] * args.normal
    plan += [(k, None) for k in ICH_KINDS for _ in range(args.per_kind)]
    rows = []
    for i, (kind, calcified) in enumerate(plan):
        acq = HELD_OUT
        if calcified is not None:  # normals: every head calcified, or none
            acq = replace(HELD_OUT, calcified=float(calcified))
        s = make_series(rng, acq, int(rng.integers(6, 25)), None if kind == "none" else kind,
                        spacing_mm=(3.0, 10.0), noise=False)  # fmt: skip
        matrix = int(rng.choice([256, 512]))
        assert s.head is not None
        hdr = header("HEAD PLAIN")
        mm = s.pixel_mm * s.slices[0].shape[0] / matrix
        dss = [ct_image(at_matrix(x, matrix, s.head.noise, rng), hdr, j, mm, s.thickness_mm)
               for j, x in enumerate(s.slices)]  # fmt: skip
        row = score(engine, dss)
        row.update(kind=kind, calcified=s.calcified, size_mm=s.bleed.size_mm if s.bleed else 0.0,
                   hu=s.bleed.hu if s.bleed else None, slices=len(dss),
                   bleed_slices=len(s.bleed_slices), matrix=matrix,
                   thickness_mm=round(s.thickness_mm, 2), noise_hu=round(s.head.noise, 2),
                   visibility=visibility(s))  # fmt: skip
        rows.append(row)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(plan)} series", flush=True)
    return rows


def legacy_rows(engine: TriageEngine, n: int, seed: int) -> list[dict[str, Any]]:
    """Normal series of the v0.2 generator (the heads the tester saw at 0.62-0.85)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        hdr = header("HEAD PLAIN 5mm")
        row = score(engine, [ct_image(head_slice(rng), hdr, j, 2.0, 5.0) for j in range(8)])
        rows.append(row)
    return rows


def odd_rows(engine: TriageEngine, seed: int) -> list[dict[str, Any]]:
    """Out-of-distribution series: what the applicability gate should refuse."""
    rng = np.random.default_rng(seed)
    out = []
    chest = [np.kron(body_slice(rng, "CHEST"), np.ones((4, 4), np.float32)) for _ in range(8)]
    for label, part in (("chest CT labelled CHEST", "CHEST"), ("chest CT labelled HEAD", "HEAD")):
        hdr = header("CHEST" if part == "CHEST" else "HEAD PLAIN", part)
        out.append({"case": label,
                    **score(engine, [ct_image(x, hdr, j, 0.7, 5.0) for j, x in enumerate(chest)])})  # fmt: skip
    s = make_series(rng, HELD_OUT, 8, None)
    hdr = header("HEAD PLAIN")
    tiny = [ndimage.zoom(x, 32 / x.shape[0], order=1) for x in s.slices]  # whole head, 32x32
    out.append({"case": "32x32 series labelled HEAD (whole head, 7.5 mm pixels)",
                **score(engine, [ct_image(x, hdr, j, 240 / 32, 5.0) for j, x in enumerate(tiny)])})  # fmt: skip
    patch = [np.kron(x, np.ones((4, 4)))[240:272, 240:272] for x in s.slices]  # 32 mm patch
    out.append({"case": "32x32 patch labelled HEAD (1 mm pixels)",
                **score(engine, [ct_image(x, hdr, j, 1.0, 5.0) for j, x in enumerate(patch)])})  # fmt: skip
    vol = np.stack(make_series(rng, HELD_OUT, 30, None, (4.0, 4.0), noise=False).slices)
    atten = np.clip(vol + 1000, 0, None).sum(axis=2)[::-1]  # lateral projection, vertex up
    scout = ndimage.zoom(atten, (512 / atten.shape[0], 512 / atten.shape[1]), order=1)
    scout = (scout / scout.max() * 3000 - 1024).astype(np.float32)
    ds = ct_image(scout, header("HEAD SCOUT"), 0, 0.5, 1.0, "ORIGINAL\\PRIMARY\\LOCALIZER")
    out.append({"case": "localizer (ORIGINAL\\PRIMARY\\LOCALIZER) labelled HEAD",
                **score(engine, [ds])})  # fmt: skip
    try:  # deid-data's "CT brain": a colour drawing in a HEAD CT header, not a scan
        import deid_data

        smiley = dcmread(Path(deid_data.__file__).parent / "data" / "humans" / "ctbrain1.dcm")
        out.append({"case": "deid-data ctbrain1.dcm (RGB drawing, HEAD CT header)",
                    **score(engine, [smiley])})  # fmt: skip
    except ImportError:
        pass
    return out


def real_rows(engine: TriageEngine) -> list[dict[str, Any]]:
    """The real head slices (NOT held out: the model trained on these same slices)."""

    def load(name: str) -> Dataset:
        ds = dcmread(get_testdata_file(name, download=False))
        ds.BodyPartExamined = "HEAD"  # 693 has none; its description does not say head
        ds.SeriesInstanceUID = generate_uid()
        return ds

    rows = [{"case": name, **score(engine, [load(name)])} for name in (*REAL_HEADS, "693_J2KI.dcm")]
    both = [load("693_UNCR.dcm"), load("J2K_pixelrep_mismatch.dcm")]
    rows.append({"case": "693_UNCR + J2K_pixelrep_mismatch as one series", **score(engine, both)})
    return rows


def rate(rows: list[dict[str, Any]], hit: Any) -> dict[str, Any]:
    k, n = sum(1 for r in rows if hit(r)), len(rows)
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def summarise(rows: list[dict[str, Any]], legacy: list[dict[str, Any]]) -> dict[str, Any]:
    flagged = lambda r: r["priority"] in ("urgent", "stat")  # noqa: E731
    routine = lambda r: r["priority"] == "routine"  # noqa: E731
    stat = lambda r: r["priority"] == "stat"  # noqa: E731
    bleeds = [r for r in rows if r["kind"] != "none"]
    normals = [r for r in rows if r["kind"] == "none"]
    big = [r for r in bleeds if r["size_mm"] >= 5]
    return {
        "bleeds_5mm_plus": {"urgent_or_stat": rate(big, flagged), "stat": rate(big, stat)},
        "bleeds_all": {"urgent_or_stat": rate(bleeds, flagged), "stat": rate(bleeds, stat)},
        "by_kind": {k: {"urgent_or_stat": rate([r for r in bleeds if r["kind"] == k], flagged),
                        "stat": rate([r for r in bleeds if r["kind"] == k], stat)}
                    for k in ICH_KINDS},
        "by_size": {name: {"urgent_or_stat": rate([r for r in bleeds if lo <= r["size_mm"] < hi],
                                                  flagged),
                           "stat": rate([r for r in bleeds if lo <= r["size_mm"] < hi], stat)}
                    for name, lo, hi in SIZE_BUCKETS},
        "faint_50_65hu": {"urgent_or_stat": rate([r for r in big if r["hu"] < 65], flagged)},
        "by_visibility_5mm_plus": {name: rate([r for r in big if lo <= r["visibility"] < hi],
                                              flagged)
                                   for name, lo, hi in VISIBILITY_BANDS},
        "normal_routine": rate(normals, routine),
        "normal_routine_calcified": rate([r for r in normals if r["calcified"]], routine),
        "normal_routine_not_calcified": rate([r for r in normals if not r["calcified"]], routine),
        "normal_stat": rate(normals, stat),
        "not_applicable": {"normal": rate(normals, lambda r: r["status"] == "not_applicable"),
                           "bleed": rate(bleeds, lambda r: r["status"] == "not_applicable")},
        "legacy_generator_normal_routine": rate(legacy, routine),
    }  # fmt: skip


def fmt(r: dict[str, Any]) -> str:
    if not r["n"]:
        return "n/a (0)"
    lo, hi = r["ci95"]
    return f"{r['rate']:.3f} ({r['k']}/{r['n']}; 95% CI {lo:.3f}-{hi:.3f})"


def markdown(summary: dict[str, Any], odd: list[dict[str, Any]], real: list[dict[str, Any]],
             thresholds: str) -> str:  # fmt: skip
    s = summary
    lines = [f"## ICH triage, held-out series ({thresholds})", "",
             "| measure | value |", "|---|---|",
             f"| sensitivity, bleeds >= 5 mm, urgent or stat | {fmt(s['bleeds_5mm_plus']['urgent_or_stat'])} |",
             f"| sensitivity, bleeds >= 5 mm, stat | {fmt(s['bleeds_5mm_plus']['stat'])} |",
             f"| sensitivity, all bleeds, urgent or stat | {fmt(s['bleeds_all']['urgent_or_stat'])} |",
             f"| faint (50-65 HU) bleeds >= 5 mm, urgent or stat | {fmt(s['faint_50_65hu']['urgent_or_stat'])} |"]  # fmt: skip
    lines += [f"| {k}, urgent or stat / stat | {fmt(v['urgent_or_stat'])} / {fmt(v['stat'])} |"
              for k, v in s["by_kind"].items()]  # fmt: skip
    lines += [f"| size {k}, urgent or stat / stat | {fmt(v['urgent_or_stat'])} / {fmt(v['stat'])} |"
              for k, v in s["by_size"].items()]  # fmt: skip
    lines += [f"| bleeds >= 5 mm of visibility {k}, urgent or stat | {fmt(v)} |"
              for k, v in s["by_visibility_5mm_plus"].items()]  # fmt: skip
    lines += [f"| normal series left routine | {fmt(s['normal_routine'])} |",
              f"| ... with calcifications | {fmt(s['normal_routine_calcified'])} |",
              f"| ... without calcifications | {fmt(s['normal_routine_not_calcified'])} |",
              f"| normal series called stat | {fmt(s['normal_stat'])} |",
              f"| not scored (not_applicable): normal / bleed | {fmt(s['not_applicable']['normal'])} / {fmt(s['not_applicable']['bleed'])} |",
              f"| v0.2-generator normal series left routine (training-like) | {fmt(s['legacy_generator_normal_routine'])} |",
              "", "| series | status | priority | ich score | reason |", "|---|---|---|---|---|"]  # fmt: skip
    for r in odd + real:
        sc = "-" if r.get("score") is None else f"{r['score']:.3f}"
        why = "; ".join(r.get("reasons", [])).replace("|", "/")
        lines.append(f"| {r['case']} | {r['status']} | {r['priority']} | {sc} | {why} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--normal", type=int, default=150)
    ap.add_argument("--per-kind", type=int, default=60)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--json", type=Path, default=JSON_OUT, help="where to write the record")
    args = ap.parse_args()
    t0 = time.time()
    engine = TriageEngine.start(TriageConfig(), None)
    ich = next(r for r in engine.runners if r.name == "ich").model.manifest
    th = ich.thresholds["haemorrhage"]
    agg = ich.aggregation
    length = (f", less {agg.length_slope} x ln(slices/{agg.length_reference}) past "
              f"{agg.length_reference}" if agg.length_reference else "")  # fmt: skip
    thresholds = (f"ich@{ich.version}, {agg.method} k={agg.k}{length}, "
                  f"urgent {th.urgent}, stat {th.stat}")  # fmt: skip
    rows = synthetic_rows(engine, args)
    legacy = legacy_rows(engine, 40, args.seed + 1)
    odd, real = odd_rows(engine, args.seed + 2), real_rows(engine)
    summary = summarise(rows, legacy)
    text = markdown(summary, odd, real, thresholds)
    print(text)
    REPORT.write_text(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {"model": f"ich@{ich.version}", "aggregation": agg.model_dump(),
           "thresholds": {"urgent": th.urgent, "stat": th.stat},
           "seed": args.seed, "held_out_acquisition": asdict(HELD_OUT), "summary": summary,
           "out_of_distribution": odd, "real_heads_not_held_out": real,
           "series": rows, "seconds": round(time.time() - t0, 1)}  # fmt: skip
    args.json.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(f"wrote {REPORT} and {args.json} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
