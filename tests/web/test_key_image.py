"""The key image of a QC-failed series: the worst slice, windowed for head CT, with the ring or
the motion streaks outlined where they are. The series are reconstructed from simulated
projections with the artifact made where it arises (tests/support/corpus_ct.py), so the true
ring radius and the true streaks come from the same projections without noise."""

from __future__ import annotations

import io
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread

from agent.web.key_image import QC_COLOUR, KeyImageRenderer
from agent.web.regions import apply_window, window_name
from kernels.ct import fbp_parallel
from kernels.qc import ct_metrics
from kernels.qc._common import polar
from tests.support import corpus_ct as K
from tests.support.corpus import CT_PARAMS
from tests.support.dicom_factory import real_file
from tests.support.qc_series import write_series
from tests.web.key_image_series import outline_pixels, picture, store_series

N = 4  # slices; write_series draws slice i from seed i of corpus source 0 (the real head)
P = CT_PARAMS[0]


def ring_radii(seed: int) -> NDArray[np.float64]:
    """The radius (pixels) of each ring of ``seed``'s slice, from its noise-free image."""
    sino, _ = K._clean_sino(P.source, P.matrix)
    theta, nd = K._theta(P.matrix), sino.shape[0]
    rng = K._rng(seed, P, "ring")  # the generator's own draw of the faulty channels
    channels = rng.choice(np.arange(nd // 2 - nd // 3, nd // 2 - 3), size=3, replace=False)
    radii = []
    for ch in channels:
        d = np.zeros_like(sino)
        d[[ch, nd - 1 - ch]] = 1.0
        ring = fbp_parallel(d, theta, filter=P.filter, output_size=nd).astype(np.float32)
        profile = np.abs(polar(ring, (nd - 1) / 2, (nd - 1) / 2, 0, nd // 2 - 2, 180).mean(0))
        radii.append(float(np.argmax(profile)))
    return np.array(radii)


def motion_streaks(seed: int, severity: int) -> NDArray[np.float64]:
    """|HU| the motion adds to ``seed``'s slice: motion and still projections, noise-free."""
    sino, px = K._clean_sino(P.source, P.matrix)
    theta = K._theta(P.matrix)
    rng = K._rng(seed, P, "motion")  # the generator's draws, in its order
    mm = {1: 1.0, 2: 3.0, 3: 6.0}[severity] * rng.uniform(0.9, 1.2)
    start = int(rng.integers(len(theta) // 4, 3 * len(theta) // 4))
    moved = K._shift_views(sino, theta, mm / px, rng.uniform(0, 2 * np.pi), start)
    fbp = lambda s: fbp_parallel(s, theta, filter=P.filter, output_size=s.shape[0])  # noqa: E731
    out: NDArray[np.float64] = np.abs(fbp(moved) - fbp(sino)) / px * 1000.0 / K.MU_WATER
    return out


def worst(artifact: str, severity: int, metric: str) -> int:
    """The seed of the slice with the worst ``metric`` (the one the key image must show)."""
    values = [ct_metrics(K.ct_slice(P, artifact, severity, i).hu, K.ct_slice(P, artifact, severity, i).spacing)[metric]
              for i in range(N)]  # fmt: skip
    return int(np.argmax(values))


@pytest.fixture(scope="module")
def ring_storage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("ring")
    verdict = store_series(folder / "state", write_series(folder / "files", "ring", 3, n=N))
    assert verdict.qc.status == "fail" and [r.code for r in verdict.qc.reasons] == ["ring_hu"]
    return folder / "state", verdict.series_uid


def test_ring_is_circled_at_its_centre_and_radius(ring_storage: tuple[Path, str]) -> None:
    storage, uid = ring_storage
    png = KeyImageRenderer(storage).key_image(uid)
    assert png is not None and png.startswith(b"\x89PNG")
    scale = picture(png).shape[1] / P.matrix
    ys, xs = outline_pixels(png, QC_COLOUR)
    assert len(ys) > 200, "a circle is drawn"
    cy, cx = ys.mean() / scale, xs.mean() / scale
    r = np.median(np.hypot(ys - ys.mean(), xs - xs.mean())) / scale
    centre = (P.matrix - 1) / 2  # the rotation axis
    assert abs(cy - centre) < 2 and abs(cx - centre) < 2, (cy, cx)
    true = ring_radii(worst("ring", 3, "ring_z"))
    assert np.min(np.abs(true - r)) < 3, (r, true)


def test_key_image_is_the_worst_slice_in_the_brain_window(ring_storage: tuple[Path, str]) -> None:
    storage, uid = ring_storage
    grey = picture(KeyImageRenderer(storage).key_image(uid) or b"")
    assert grey.std() > 20, "not blank"
    s = K.ct_slice(P, "ring", 3, worst("ring", 3, "ring_z"))
    png = KeyImageRenderer(storage).key_image(uid) or b""
    ys, xs = outline_pixels(png, QC_COLOUR)
    drawn = np.zeros(grey.shape, bool)
    drawn[ys, xs] = True
    scale = grey.shape[0] // P.matrix  # 256 -> 512: each pixel shown as 2 x 2
    small = grey.reshape(P.matrix, scale, P.matrix, scale).astype(np.float64).mean(axis=(1, 3))
    clean = ~drawn.reshape(P.matrix, scale, P.matrix, scale).any(axis=(1, 3))

    def shown(u8: NDArray[np.uint8]) -> NDArray[np.float64]:
        """A windowed slice as the key image scales it (bilinear), averaged back per pixel."""
        big = np.asarray(Image.fromarray(u8).resize(grey.shape[::-1], Image.Resampling.BILINEAR))
        out: NDArray[np.float64] = big.reshape(P.matrix, scale, P.matrix, scale).mean(axis=(1, 3))
        return out

    brain, soft = (
        shown(apply_window(np.maximum(s.hu, -1024), w)) for w in ("brain", "soft tissue")
    )
    assert window_name("CT", "HEAD", "") == "brain"
    inside = clean & (
        np.hypot(*np.mgrid[: P.matrix, : P.matrix] - (P.matrix - 1) / 2) < 0.35 * P.matrix
    )
    err_brain = np.abs(small - brain)[inside].mean()
    err_soft = np.abs(small - soft)[inside].mean()
    # compared as the key image scales them, the slice shown is the same pixels
    assert err_brain < 1 and err_brain < err_soft / 2, (err_brain, err_soft)
    other = K.ct_slice(P, "ring", 3, (worst("ring", 3, "ring_z") + 1) % N)
    other_shown = shown(apply_window(np.maximum(other.hu, -1024), "brain"))
    err_other = np.abs(small - other_shown)[inside].mean()
    assert err_brain < err_other, "the slice shown is the worst one, not its neighbour"


def test_motion_band_holds_the_streaks(tmp_path: Path) -> None:
    verdict = store_series(tmp_path / "state", write_series(tmp_path / "files", "motion", 3, n=N))
    assert "motion_streak_hu" in [r.code for r in verdict.qc.reasons]
    png = KeyImageRenderer(tmp_path / "state").key_image(verdict.series_uid)
    assert png is not None
    scale = picture(png).shape[1] / P.matrix
    ys, xs = outline_pixels(png, QC_COLOUR)
    y0, y1, x0, x1 = (v / scale for v in (ys.min(), ys.max(), xs.min(), xs.max()))
    seed = worst("motion", 3, "motion_streak_hu")
    streaks = motion_streaks(seed, 3)
    yy, xx = np.mgrid[: P.matrix, : P.matrix]
    band = (yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)
    air = K.ct_slice(P, "motion", 3, seed).hu < -900  # where motion_streak_hu looks
    inside, outside = streaks[band & air].mean(), streaks[~band & air].mean()
    assert band.mean() < 0.7, "a band, not the whole image"
    assert inside > 1.3 * outside, (inside, outside)


def test_strip_marks_the_flagged_slices(ring_storage: tuple[Path, str]) -> None:
    storage, uid = ring_storage
    png = KeyImageRenderer(storage).strip(uid)
    assert png is not None
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    assert rgb.shape[1] == N * 68 and rgb.shape[0] == 68
    marked = [bool((np.abs(rgb[0:2, 68 * i + 10 : 68 * i + 58] - QC_COLOUR).sum(-1) < 40).any()
                   or (np.abs(rgb[0:2, 68 * i + 10 : 68 * i + 58] - (80, 170, 255)).sum(-1) < 40).any())
              for i in range(N)]  # fmt: skip
    assert all(marked), "every slice of a 6-of-6 ring series is flagged"


@pytest.mark.parametrize(
    "uid",
    ["../../etc/passwd", "1.2.3'; DROP TABLE series; --", "", "1." * 40, "1..2", "%2e%2e", "１.２"],
)
def test_hostile_and_unknown_uids_give_none(ring_storage: tuple[Path, str], uid: str) -> None:
    storage, _ = ring_storage
    renderer = KeyImageRenderer(storage)
    assert renderer.key_image(uid) is None and renderer.strip(uid) is None
    assert renderer.key_image("1.2.3.4.5") is None, "unknown series"
    assert KeyImageRenderer(storage / "nowhere").key_image("1.2.3") is None


def test_cache_follows_the_verdict(ring_storage: tuple[Path, str], tmp_path: Path) -> None:
    storage, uid = ring_storage
    renderer = KeyImageRenderer(storage)
    first = renderer.key_image(uid)
    assert renderer.key_image(uid) is first, "cached"
    conn = sqlite3.connect(storage / "journal.sqlite")
    with conn:
        conn.execute(
            "UPDATE last_verdicts SET updated_at = updated_at + 1 WHERE series_uid = ?", (uid,)
        )
    conn.close()
    again = renderer.key_image(uid)
    assert again is not first and again == first, "a new verdict renders again"


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm", "emri_small.dcm", "693_J2KI.dcm"]
)
def test_real_images_render(tmp_path: Path, name: str) -> None:
    """pydicom-data's CT, MR (one multi-frame), CR and a JPEG 2000 CT: a picture each."""
    verdict = store_series(tmp_path / "state", [dcmread(real_file(name))])
    renderer = KeyImageRenderer(tmp_path / "state")
    png, strip = renderer.key_image(verdict.series_uid), renderer.strip(verdict.series_uid)
    assert png is not None and strip is not None
    assert picture(png).std() > 20, "not blank"


def test_threads_share_one_rendering(ring_storage: tuple[Path, str]) -> None:
    storage, uid = ring_storage
    renderer = KeyImageRenderer(storage)
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: renderer.key_image(uid), range(8)))
        strips = list(pool.map(lambda _: renderer.strip(uid), range(8)))
    assert keys[0] is not None and all(k is keys[0] for k in keys), "rendered once, then cached"
    assert strips[0] is not None and all(s is strips[0] for s in strips)
