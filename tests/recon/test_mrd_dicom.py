"""DICOM from MRD: geometry from the acquisition headers, deterministic UIDs, counts that let
the assembler complete the series; and offline reconstruction of MRD stream and HDF5 files."""

from __future__ import annotations

import io
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import MRImageStorage

from agent.recon.mrd_file import is_mrd_file, reconstruct_file
from tests.support.mrd_streams import (
    FOV,
    THICKNESS,
    cartesian_slice,
    full_lines,
    header,
    oblique,
    running_server,
    send_stream,
    serialize,
)
from tests.support.mri_phantoms import cartesian_multicoil

N, COILS, SLICES = 32, 2, 3


@pytest.fixture(scope="module")
def kspace() -> np.ndarray:
    return cartesian_multicoil(N, COILS).astype(np.complex64)


def multislice(k: np.ndarray, deg: float = 30.0) -> list[object]:
    orient = oblique(deg)
    return [a for s in range(SLICES) for a in cartesian_slice(k, full_lines(N), s, orient)]


def test_oblique_multislice_geometry(kspace: np.ndarray) -> None:
    hdr = header(N, COILS, slices=SLICES, measurement_id="4711_1")
    with running_server() as (srv, got):
        images = send_stream(srv.port, hdr, multislice(kspace))
        datasets = got.wait_for(SLICES)
    assert len(images) == SLICES
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3]
    orient = oblique(30.0)
    for s, ds in enumerate(datasets):
        assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR"
        assert ds.ImagesInAcquisition == SLICES
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        row, col = iop[:3], iop[3:]
        assert np.linalg.norm(row) == pytest.approx(1) and np.linalg.norm(col) == pytest.approx(1)
        assert row @ col == pytest.approx(0, abs=1e-6)
        assert np.allclose(row, orient.read) and np.allclose(col, orient.phase)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([FOV / N, FOV / N])
        assert float(ds.SliceThickness) == pytest.approx(THICKNESS)
        centre = np.array(ds.ImagePositionPatient, dtype=float) + (N // 2) * (FOV / N) * (row + col)
        assert np.allclose(centre, np.array(orient.normal) * s * THICKNESS, atol=1e-3)
        assert float(ds.SliceLocation) == pytest.approx(s * THICKNESS, abs=1e-3)
        assert ds.Rows == ds.Columns == N and ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
        assert "127.0.0.1:" in ds.DerivationDescription
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == SLICES
    buf = io.BytesIO()
    datasets[0].save_as(buf, enforce_file_format=True)
    back = dcmread(io.BytesIO(buf.getvalue()))
    assert back.pixel_array.shape == (N, N) and back.pixel_array.max() > 1000


def test_measurement_id_gives_the_same_uids_on_resend(kspace: np.ndarray) -> None:
    hdr = header(N, COILS, slices=SLICES, measurement_id="4711_2")
    with running_server(send_back=False) as (srv, got):
        send_stream(srv.port, hdr, multislice(kspace), read_back=False)
        first = got.wait_for(SLICES)
        send_stream(srv.port, hdr, multislice(kspace), read_back=False)
        second = got.wait_for(2 * SLICES)[SLICES:]
        send_stream(srv.port, header(N, COILS, slices=SLICES), multislice(kspace), read_back=False)
        third = got.wait_for(3 * SLICES)[2 * SLICES :]
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in second]
    assert first[0].SeriesInstanceUID == second[0].SeriesInstanceUID
    assert third[0].SeriesInstanceUID != first[0].SeriesInstanceUID


def test_reconstruct_stream_file_and_hdf5(kspace: np.ndarray, tmp_path: Path) -> None:
    hdr = header(N, COILS, slices=SLICES)
    acqs = multislice(kspace, 0.0)
    stream = tmp_path / "scan.mrd"
    stream.write_bytes(serialize(hdr, *acqs) + b"\x04\x00")
    h5 = tmp_path / "scan.h5"
    dset = ismrmrd.Dataset(str(h5), "dataset", create_if_needed=True)
    dset.write_xml_header(hdr.toXML().encode())
    for a in acqs:
        dset.append_acquisition(a)
    dset.close()
    assert is_mrd_file(stream) and is_mrd_file(h5)
    from_stream, from_h5 = reconstruct_file(stream), reconstruct_file(h5)
    assert len(from_stream) == len(from_h5) == SLICES
    for a, b in zip(from_stream, from_h5, strict=True):
        assert np.array_equal(a.pixel_array, b.pixel_array)
        assert a.InstanceNumber == b.InstanceNumber
    assert reconstruct_file(stream)[0].SOPInstanceUID == from_stream[0].SOPInstanceUID
