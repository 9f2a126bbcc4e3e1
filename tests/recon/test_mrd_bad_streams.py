"""Bad MRD streams end their own connection with a WARNING naming the peer and the reason;
the server keeps serving, and a good stream afterwards still comes back as images."""

from __future__ import annotations

import logging
import struct

import numpy as np
import pytest

from agent.recon.mrd_protocol import MrdLimits
from tests.support.mrd_streams import (
    acquisition,
    cartesian_slice,
    full_lines,
    header,
    running_server,
    send_raw,
    send_stream,
    serialize,
)
from tests.support.mri_phantoms import cartesian_multicoil

N, COILS = 32, 2


@pytest.fixture(scope="module")
def kspace() -> np.ndarray:
    return cartesian_multicoil(N, COILS).astype(np.complex64)


def good(port: int, k: np.ndarray) -> None:
    images = send_stream(port, header(N, COILS), cartesian_slice(k, full_lines(N)))
    assert len(images) == 1 and images[0].data.shape[-2:] == (N, N)


CASES = {
    "truncated": lambda k: serialize(header(N, COILS), acquisition(k[:, 0], 0))[:-100],
    "no close": lambda k: serialize(header(N, COILS), acquisition(k[:, 0], 0)),
    "unknown id": lambda k: serialize(header(N, COILS)) + struct.pack("<H", 777) + b"\0" * 64,
    "coil count": lambda k: serialize(header(N, 8), acquisition(k[:, 0], 0)),
    "sample count": lambda k: serialize(header(N, COILS), acquisition(k[:, 0, : N - 4], 0)),
    "ky outside limits": lambda k: serialize(header(N, COILS), acquisition(k[:, 0], N + 3)),
    "slice outside limits": lambda k: serialize(
        header(N, COILS), acquisition(k[:, 0], 0, slice_=5)
    ),
    "bad xml": lambda k: struct.pack("<HI", 3, 12) + b"<not xml/>\0\0",
    "acquisition before header": lambda k: serialize(acquisition(k[:, 0], 0)),
    "oversized message": lambda k: (
        serialize(header(N, COILS)) + struct.pack("<H", 1008) + _huge_acq_header()
    ),
    "oversized text": lambda k: struct.pack("<HI", 5, 0xFFFFFFF0),
    "oversized slice": lambda k: serialize(
        header(4096, COILS, ny=4096), acquisition(np.zeros((COILS, 8192)), 0)
    ),
}
REASONS = {
    "truncated": "middle of a message",
    "no close": "without a CLOSE",
    "unknown id": "unknown message id 777",
    "coil count": "receiverChannels=8",
    "sample count": f"encoded matrix x is {N}",
    "ky outside limits": "outside the encoding limits",
    "slice outside limits": "slice 5 outside",
    "bad xml": "does not parse",
    "acquisition before header": "before the XML header",
    "oversized message": "exceeds the limit",
    "oversized text": "exceeds the limit",
    "oversized slice": "exceeds the limit",
}


def _huge_acq_header() -> bytes:
    import ismrmrd

    head = ismrmrd.AcquisitionHeader()
    head.version, head.number_of_samples, head.active_channels = 1, 65535, 1024
    return bytes(head)


def test_bad_streams_close_only_their_connection(
    kspace: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    limits = MrdLimits(max_message_bytes=8 << 20, max_slice_bytes=64 << 20)
    with running_server(limits=limits) as (srv, got):
        good(srv.port, kspace)
        for name, build in CASES.items():
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="agent.recon.mrd_server"):
                reply = send_raw(srv.port, build(kspace))
            assert struct.pack("<H", 4) not in reply[:2], name  # no CLOSE answer: it failed
            lines = [r.getMessage() for r in caplog.records if r.name == "agent.recon.mrd_server"]
            assert any("127.0.0.1:" in m and REASONS[name] in m for m in lines), (name, lines)
            good(srv.port, kspace)
        assert srv.connections == 2 * len(CASES) + 1
        assert len(got.datasets) == len(CASES) + 1
