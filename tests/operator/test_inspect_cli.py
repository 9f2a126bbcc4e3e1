"""``python -m agent inspect PATH --json`` on raw data: an MRD stream file, an ISMRMRD HDF5
file and a CT projection file (Raw Data Storage sinogram) are reconstructed and judged,
one verdict per series, each a JSON line of the daemon's Verdict with state ``complete``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import pytest
from pydicom import dcmread

from tests.support import projection_factory as pf
from tests.support.cli import scanner_agent
from tests.support.mrd_streams import cartesian_slice, full_lines, header, serialize
from tests.support.mri_phantoms import cartesian_multicoil

ROOT = Path(__file__).resolve().parents[2]
N, COILS, SLICES = 32, 2, 3
PD_ROWS = 2
CLOSE = b"\x04\x00"  # the MRD stream's CLOSE message id


def inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return scanner_agent("inspect", *args, "--json", timeout=300)


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("raw")
    k = cartesian_multicoil(N, COILS).astype(np.complex64)
    hdr = header(N, COILS, slices=SLICES)
    acqs = [a for s in range(SLICES) for a in cartesian_slice(k, full_lines(N), s)]
    stream = folder / "scan.mrd"
    stream.write_bytes(serialize(hdr, *acqs) + CLOSE)
    h5 = folder / "scan.h5"
    dset = ismrmrd.Dataset(str(h5), "dataset", create_if_needed=True)
    dset.write_xml_header(hdr.toXML().encode())
    for a in acqs:
        dset.append_acquisition(a)
    dset.close()
    angles = np.arange(0.0, 180.0, 2.0)
    sino = pf.radon_parallel(pf.inscribed(pf.shepp_logan_mu(64)), 1.5, angles).T  # (views, det)
    projection = folder / "sinogram.dcm"
    pf.raw_sinogram(
        np.stack([sino] * PD_ROWS, axis=1), angles, geometry="PARALLEL", du=1.5, dv=2.0
    ).save_as(projection, enforce_file_format=True)
    return {"stream": stream, "hdf5": h5, "projection": projection}


def check_shape(doc: dict[str, Any]) -> None:
    """The daemon's Verdict (README): schema, complete, no deliveries, QC with reasons."""
    assert doc["schema"] == "scanner-agent.verdict/1"
    assert doc["state"] == "complete" and doc["deliveries"] == {}
    assert doc["study_uid"] and doc["series_uid"] and doc["study_uid"] != doc["series_uid"]
    assert doc["qc"]["status"] in {"pass", "warn", "fail"}
    assert doc["qc"]["metrics"]["images_measured"] == doc["instances"]
    for r in doc["qc"]["reasons"]:
        assert set(r) == {"code", "message", "value", "threshold"}
    assert "triage" in doc


@pytest.mark.parametrize(
    ("kind", "modality", "instances"),
    [("stream", "MR", SLICES), ("hdf5", "MR", SLICES), ("projection", "CT", PD_ROWS)],
)
def test_inspect_reconstructs_raw_data(
    raw_files: dict[str, Path], kind: str, modality: str, instances: int
) -> None:
    run = inspect(str(raw_files[kind]))
    assert run.returncode == 0, run.stderr
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(docs) == 1, run.stdout
    check_shape(docs[0])
    assert (docs[0]["modality"], docs[0]["instances"]) == (modality, instances)
    assert "skipped" not in run.stderr


def test_inspect_gives_one_verdict_per_series(raw_files: dict[str, Path]) -> None:
    run = inspect(*(str(p) for p in raw_files.values()))
    assert run.returncode == 0, run.stderr
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted((d["modality"], d["instances"]) for d in docs) == [
        ("CT", PD_ROWS), ("MR", SLICES), ("MR", SLICES),
    ]  # fmt: skip
    assert len({d["series_uid"] for d in docs}) == 3
    source = dcmread(raw_files["projection"], stop_before_pixels=True)
    ct = next(d for d in docs if d["modality"] == "CT")
    assert ct["study_uid"] == source.StudyInstanceUID
    assert ct["series_uid"] != source.SeriesInstanceUID  # the reconstruction, a new series
