"""Projection-data ingest: recognition, reconstruction accuracy, output geometry, bad input.

Tolerances (docs/projection-data.md) are errors in HU against the known object:
parallel (skimage Shepp-Logan, 128 px, 180 views): median |error| < 20 HU over flat regions;
fan (real CT slice, 288 channels, 240 views): median |error| < 10 HU and |bias| < 5 HU
over the body; FDK (3-D analytic head, 24 x 112 panel, 120 views): central slice median
|error| < 20 HU and |bias| < 20 HU.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, RawDataStorage
from scipy import ndimage

from agent.recon import ct_projection as cp
from agent.recon import projection_tags as tags
from tests.support import ct_phantoms as ph
from tests.support import projection_factory as pf
from tests.support.dicom_factory import ct_slice, series_header

MU_W = pf.MU_WATER


def _hu(mu: np.ndarray) -> np.ndarray:
    return 1000.0 * (mu / MU_W - 1.0)


@pytest.fixture(scope="module")
def parallel() -> tuple[Dataset, np.ndarray]:
    image = pf.inscribed(pf.shepp_logan_mu(128))
    angles = np.arange(180.0)
    sino = pf.radon_parallel(image, 1.5, angles)
    return pf.raw_sinogram(sino.T[:, None, :], angles, geometry="PARALLEL", du=1.5), image


@pytest.fixture(scope="module")
def fan() -> tuple[list[Dataset], np.ndarray, float]:
    image, pixel = pf.real_slice_mu(128)
    angles = np.arange(0, 360, 1.5)
    s = (np.arange(288) - 287 / 2) * 1.6
    sino = pf.project_fan(image, pixel, angles, s, 400.0, 700.0, "equiangular")
    datasets = pf.ct_pd_series(sino.T[:, None, :], angles, dist=400.0, sdd=700.0, du=1.6, dv=1.0)
    np.random.default_rng(0).shuffle(datasets)  # arrival order is not view order
    return datasets, image, pixel


@pytest.fixture(scope="module")
def cone() -> tuple[list[Dataset], list[ph.Ellipsoid]]:
    angles = np.arange(0, 360, 3.0)
    v = (np.arange(24) - 23 / 2) * 1.0
    u = (np.arange(112) - 111 / 2) * 1.5
    phantom = ph.head_3d(40.0)
    proj = ph.cone_projections(phantom, angles, v, u, 300.0, 600.0) * (MU_W / 0.2)
    datasets = pf.ct_pd_series(
        proj, angles, dist=300.0, sdd=600.0, du=1.5, dv=1.0, shape="FLAT", z_mm=-12.5
    )
    return datasets, phantom


def test_recognises_both_layouts(parallel, fan) -> None:
    assert cp.is_projection_data(parallel[0])
    assert all(cp.is_projection_data(ds) for ds in fan[0])
    assert not cp.is_projection_data(ct_slice(series_header(), 0))
    other_raw = Dataset()
    other_raw.SOPClassUID = RawDataStorage
    assert not cp.is_projection_data(other_raw)


def test_groups_views_in_angle_order(fan) -> None:
    ps = cp.group_projections(fan[0])
    g = ps.geometry
    assert (g.layout, g.kind, g.detector) == ("DICOM-CT-PD", "fan", "equiangular")
    assert ps.data.shape == (240, 1, 288)
    assert np.allclose(np.diff(g.angles_deg), 1.5, atol=1e-4)
    assert g.source_isocenter == pytest.approx(400.0) and g.det_center[1] == pytest.approx(143.5)


def test_parallel_raw_sinogram_matches_phantom(parallel) -> None:
    ds, image = parallel
    volume = cp.reconstruct(cp.group_projections([ds]), device="cpu")
    assert volume.shape == (1, 128, 128)
    flat = ndimage.generic_gradient_magnitude(image, ndimage.sobel) < 1e-4
    flat = ndimage.binary_erosion(flat & (pf.inscribed(np.ones_like(image)) > 0), iterations=2)
    error = _hu(volume[0])[flat] - _hu(image)[flat]
    assert flat.sum() > 4000
    assert np.median(np.abs(error)) < 20


def test_fan_dicom_ct_pd_matches_real_slice(fan) -> None:
    datasets, image, pixel = fan
    ps = cp.group_projections(datasets)
    volume = cp.reconstruct(ps, device="cpu", output_size=128)
    grid = cp.output_grid(ps.geometry, 128)
    yy, xx = np.mgrid[:128, :128] - 64
    scale = grid.pixel_mm / pixel
    truth = ndimage.map_coordinates(image, [yy * scale + 64, xx * scale + 64], order=1)
    body = ndimage.binary_erosion(truth > 0.5 * MU_W, iterations=3)
    error = _hu(volume[0])[body] - _hu(truth)[body]
    assert body.sum() > 3000
    assert np.median(np.abs(error)) < 10
    assert abs(error.mean()) < 5


def test_fdk_dicom_ct_pd_matches_phantom(cone) -> None:
    datasets, phantom = cone
    ps = cp.group_projections(datasets)
    assert (ps.geometry.kind, ps.geometry.detector) == ("cone", "flat")
    volume = cp.reconstruct(ps, device="cpu", output_size=64)
    grid = cp.output_grid(ps.geometry, 64)
    k = volume.shape[0] // 2
    truth = ph.rasterise(phantom, ph.image_points(64, grid.pixel_mm, grid.offsets_mm[k]))
    truth *= MU_W / 0.2
    inside = ndimage.binary_erosion(truth > 0.1 * MU_W, iterations=2)
    error = _hu(volume[k])[inside] - _hu(truth)[inside]
    assert np.median(np.abs(error)) < 20
    assert abs(error.mean()) < 20


def test_output_series_geometry(cone) -> None:
    datasets, _ = cone
    ps = cp.group_projections(datasets)
    volume = cp.reconstruct(ps, device="cpu", output_size=64)
    out = cp.to_ct_series(volume, datasets)
    grid = cp.output_grid(ps.geometry, 64)
    src = datasets[0]
    assert len(out) == volume.shape[0] == 24
    assert len({ds.SeriesInstanceUID for ds in out}) == 1
    assert out[0].SeriesInstanceUID != src.SeriesInstanceUID
    assert {ds.StudyInstanceUID for ds in out} == {src.StudyInstanceUID}
    assert {ds.FrameOfReferenceUID for ds in out} == {src.FrameOfReferenceUID}
    assert len({ds.SOPInstanceUID for ds in out}) == 24
    for k, ds in enumerate(out):
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert ds.ImagesInAcquisition == 24 and ds.InstanceNumber == k + 1
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        assert x == pytest.approx(-32 * grid.pixel_mm, abs=1e-4) and y == pytest.approx(x)
        assert z == pytest.approx(-12.5 + (k - 12) * 0.5, abs=1e-4)
        assert float(ds.PixelSpacing[0]) == pytest.approx(grid.pixel_mm, abs=1e-5)
        assert float(ds.SliceThickness) == pytest.approx(0.5)  # 1 mm rows, magnification 2
    assert float(out[0].RescaleIntercept) == -1024 and float(out[0].RescaleSlope) == 1
    refs = {item.ReferencedSOPInstanceUID for item in out[0].SourceImageSequence}
    assert refs == {ds.SOPInstanceUID for ds in datasets}
    assert "FDK" in out[0].DerivationDescription
    hu = out[12].pixel_array.astype(float) - 1024
    assert hu[32, 32] == pytest.approx(_hu(volume[12, 32, 32]), abs=1)


def test_raw_output_references_the_raw_instance(parallel) -> None:
    ds, _ = parallel
    out = cp.to_ct_series(cp.reconstruct(cp.group_projections([ds]), device="cpu"), [ds])
    assert len(out) == 1 and float(out[0].PixelSpacing[0]) == pytest.approx(1.5)
    assert out[0].SourceInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert out[0].SourceInstanceSequence[0].ReferencedSOPClassUID == RawDataStorage
    assert out[0].SliceThickness in (None, "")  # not known for this sinogram


def test_written_series_reads_back(parallel, tmp_path: Path) -> None:
    ds, _ = parallel
    path = tmp_path / "raw.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = dcmread(path)
    assert cp.is_projection_data(back)
    out = cp.to_ct_series(cp.reconstruct(cp.group_projections([back]), device="cpu"), [back])
    out[0].save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    read = dcmread(tmp_path / "ct.dcm")
    assert read.SeriesInstanceUID == out[0].SeriesInstanceUID
    assert np.array_equal(read.pixel_array, out[0].pixel_array)
    assert read.SourceInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID


def test_implicit_vr_files_decode(fan, tmp_path: Path) -> None:
    """Implicit VR: the private geometry arrives as untyped bytes and still decodes."""
    from pydicom.uid import ImplicitVRLittleEndian

    paths = []
    for i, ds in enumerate(fan[0][:6]):
        ds = copy.deepcopy(ds)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        paths.append(tmp_path / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    geometry = cp.read_geometry([dcmread(p) for p in paths])
    assert (geometry.rows, geometry.columns, geometry.source_detector) == (1, 288, 700.0)


def test_reconstruct_files_on_a_folder(parallel, tmp_path: Path) -> None:
    parallel[0].save_as(tmp_path / "raw.dcm", enforce_file_format=True)
    ct_slice(series_header(), 0).save_as(tmp_path / "image.dcm", enforce_file_format=True)
    (tmp_path / "notes.txt").write_text("not DICOM")
    out = cp.reconstruct_files([tmp_path], device="cpu")
    assert len(out) == 1 and out[0].Rows == 128


# ---------------------------------------------------------------- bad input


def _fresh(datasets: list[Dataset]) -> list[Dataset]:
    return [copy.deepcopy(ds) for ds in datasets[:8]]


def test_mismatched_detector_sizes(fan) -> None:
    datasets = _fresh(fan[0])
    datasets[3][tags.PD_COLUMNS].value = np.asarray([300], "<f4").tobytes()
    with pytest.raises(ValueError, match=r"projection 3: detector is 1x300"):
        cp.group_projections(datasets)


def test_nan_in_projection(parallel) -> None:
    ds = copy.deepcopy(parallel[0])
    tag = (tags.RAW_GROUP << 16) | (tags.raw_block_base(ds) or 0) | 0x10
    data = np.frombuffer(ds[tag].value, "<f4").copy()
    data[5 * 128 + 7] = np.nan
    ds[tag].value = data.tobytes()
    with pytest.raises(ValueError, match=r"NaN or inf \(first in view 5\)"):
        cp.group_projections([ds])


def test_nan_in_dicom_ct_pd_geometry(fan) -> None:
    datasets = _fresh(fan[0])
    datasets[2][tags.PD_RADIUS].value = np.asarray([np.nan], "<f4").tobytes()
    with pytest.raises(ValueError, match=r"DetectorFocalCenterRadialDistance.*NaN"):
        cp.group_projections(datasets)


def test_missing_geometry_tags(fan, parallel) -> None:
    datasets = _fresh(fan[0])
    del datasets[4][tags.PD_SDD]
    with pytest.raises(ValueError, match=r"projection 4 .*missing.*ConstantRadialDistance"):
        cp.group_projections(datasets)
    raw = copy.deepcopy(parallel[0])
    del raw[(tags.RAW_GROUP << 16) | (tags.raw_block_base(raw) or 0) | 0x06]
    with pytest.raises(ValueError, match="missing ViewAngles"):
        cp.group_projections([raw])


def test_non_monotonic_and_helical_angles(fan) -> None:
    datasets = _fresh(fan[0])
    for i, ds in enumerate(sorted(datasets, key=lambda d: int(d.InstanceNumber))):
        phi = [0.1, 0.2, 0.15, 0.3, 0.4, 0.5, 0.6, 0.7][i]
        ds[tags.PD_ANGLE].value = np.asarray([phi], "<f4").tobytes()
    with pytest.raises(ValueError, match="not monotonic"):
        cp.group_projections(datasets)
    datasets = _fresh(fan[0])
    datasets[1][tags.PD_AXIAL].value = np.asarray([3.0], "<f4").tobytes()
    with pytest.raises(ValueError, match="helical"):
        cp.group_projections(datasets)


def test_mixed_input_is_refused(fan) -> None:
    with pytest.raises(ValueError, match="not every data set"):
        cp.group_projections([*fan[0][:2], ct_slice(series_header(), 0)])
    with pytest.raises(ValueError, match="no data sets"):
        cp.group_projections([])
