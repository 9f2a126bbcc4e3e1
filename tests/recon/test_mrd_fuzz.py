"""Hypothesis against the MRD listener (issue 13): real streams mutated (truncated, length
fields that lie, flipped and inserted bytes), headers declaring huge matrices, coil and
acquisition counts, XML that does not parse, and garbage. Each ends only its own
connection; the server stays up, what one stream makes it allocate stays within the
configured limits (tracemalloc, which sees numpy's buffers too), what it sends back is
bounded by what it was sent, and a normal stream afterwards still comes back as its image.
The example count is bounded for CI."""

from __future__ import annotations

import struct
import time
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.recon.mrd_protocol import MrdLimits
from tests.recon.test_mrd_bad_streams import COILS, N, good
from tests.support import mrd_streams as mrd
from tests.support.mri_phantoms import cartesian_multicoil

LIMITS = MrdLimits(max_message_bytes=4 << 20, max_slice_bytes=16 << 20, max_open_bytes=32 << 20)
PEAK_BOUND = 3 * LIMITS.max_open_bytes  # buffers within the limits, plus decoding copies
CLOSE = struct.pack("<H", 4)


def normal_stream(k: np.ndarray) -> bytes:
    return mrd.serialize(mrd.header(N, COILS), *mrd.cartesian_slice(k, mrd.full_lines(N))) + CLOSE


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "length", "flip", "insert", "delete"]))
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        if kind == "truncate":
            del data[at:]
        elif kind == "length" and at + 4 <= len(data):  # a message or field length that lies
            value = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFF0, 1 << 31, 1 << 24, 0, 3]))
            data[at : at + 4] = struct.pack("<I", value)
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def huge_declared(draw: st.DrawFn) -> bytes:
    """A header declaring a huge matrix or coil count, then lines that claim as much."""
    n = draw(st.sampled_from([N, 4096, 16384, 65535]))
    coils = draw(st.sampled_from([COILS, 64, 1024]))
    ny = draw(st.sampled_from([N, 8192, 65535]))
    slices = draw(st.sampled_from([1, 1024, 65535]))
    lines = draw(st.integers(1, 3))
    line = np.zeros((min(coils, 4), min(n, 64)), np.complex64)
    acqs = [mrd.acquisition(line, draw(st.integers(0, 65535)), slice_=draw(st.integers(0, 65535)))
            for _ in range(lines)]  # fmt: skip
    body = mrd.serialize(mrd.header(n, coils, ny=ny, slices=slices), *acqs)
    if draw(st.booleans()):  # the acquisition header lies about its own payload
        at = body.rfind(struct.pack("<H", 1008)) + 2
        samples, channels = draw(st.sampled_from([(65535, 1024), (65535, 1), (1, 65535)]))
        head = bytearray(body[at:])
        struct.pack_into("<H", head, 34, samples)  # AcquisitionHeader.number_of_samples
        struct.pack_into("<H", head, 38, channels)  # and active_channels
        body = body[:at] + bytes(head)
    return body + (CLOSE if draw(st.booleans()) else b"")


def bad_xml() -> st.SearchStrategy[bytes]:
    text = st.one_of(
        st.binary(max_size=256),
        st.sampled_from([b"<ismrmrdHeader>", b"<a>" * 2000, b"<?xml version='1.0'?><x/>"]),
    )
    return text.map(lambda t: struct.pack("<HI", 3, len(t)) + t + CLOSE)


def streams(k: np.ndarray) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated(normal_stream(k)), huge_declared(), bad_xml(), st.binary(max_size=4096)
    )


def test_hostile_mrd_streams_end_only_their_connection() -> None:
    kspace = cartesian_multicoil(N, COILS).astype(np.complex64)
    with mrd.running_server(limits=LIMITS, keep=False) as (srv, got):
        good(srv.port, kspace)

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
        @given(streams(kspace))
        def attack(payload: bytes) -> None:
            tracemalloc.start()
            try:
                reply = mrd.send_raw(srv.port, payload)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < PEAK_BOUND, f"{peak} B allocated for a {len(payload)} B stream"
            # images only come back for slices whose every line was sent
            assert len(reply) <= 4 * len(payload) + (64 << 10), (len(reply), len(payload))

        attack()
        good(srv.port, kspace)
        deadline = time.monotonic() + 60  # a hang guard: the last one closes as we look
        while srv.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.active == 0, "a hostile connection is still open"
        assert got.count >= 2
