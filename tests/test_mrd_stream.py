"""The MRD listener end to end: ismrmrd's ProtocolSerializer sends analytic-phantom k-space
over real TCP to an in-process MrdServer; images come back through on_image (DICOM) and over
the connection (ismrmrd's ProtocolDeserializer)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.mri import ifftc, rss
from tests.mri_phantoms import nrmse, phantom_kspace_256, phantom_support_256
from tests.mrd_streams import (
    cartesian_slice,
    full_lines,
    grappa_lines,
    header,
    running_server,
    send_stream,
)


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    with running_server() as pair:
        yield pair


def pixels(ds) -> np.ndarray:  # type: ignore[no-untyped-def]
    return ds.pixel_array.astype(np.float64)


def test_grappa_r2_stream_matches_fully_sampled(server) -> None:  # type: ignore[no-untyped-def]
    srv, got = server
    before = len(got.datasets)
    k = np.asarray(phantom_kspace_256())
    acqs = cartesian_slice(k, grappa_lines(256, 2, 24))
    images = send_stream(srv.port, header(256, 8, accel=2), acqs)
    ds = got.wait_for(before + 1)[-1]
    ref = rss(ifftc(k))
    mask = phantom_support_256()
    back = images[0].data[0, 0]
    assert back.shape == (256, 256)
    assert nrmse(back, ref) <= 0.03
    scaled = pixels(ds) / float(ds.ImageComments.split(" x ")[-1])
    assert nrmse(scaled, ref) <= 0.03
    assert nrmse(scaled, ref, mask) <= 0.03
    assert "GRAPPA R=2" in ds.DerivationDescription
