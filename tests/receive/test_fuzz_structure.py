"""Hypothesis mutates real data sets (truncations, flipped bytes, lying lengths, inserted and
deleted runs) behind their original file meta, as a hostile peer would send them, and the
receiver's check must answer each with a stored data set or a documented refusal: never
another exception, which pynetdicom would turn into 0xC001 or no answer (issue 13)."""

from __future__ import annotations

import functools
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from agent.errors import RejectedInstance
from agent.receive.received import read_checked
from agent.receive.spool import dataset_offset
from tests.support.dicom_factory import real_file

# explicit and implicit VR, big endian, deflated, JPEG 2000 (encapsulated), nested sequences
SOURCES = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
           "image_dfl.dcm", "693_J2KR.dcm", "rtplan.dcm")  # fmt: skip
DOCUMENTED = {0xA700, 0xA900, 0xC210, 0xC211, 0xC212}  # README refusal table


@functools.cache
def _source(name: str) -> tuple[bytes, bytes, str, str]:
    """(file meta, data set bytes, SOP class, SOP instance) of a real file."""
    raw = real_file(name).read_bytes()
    start = dataset_offset(raw[:1024])
    ds = dcmread(real_file(name), stop_before_pixels=True)  # what a sender's request names
    return raw[:start], raw[start:], str(ds.SOPClassUID), str(ds.SOPInstanceUID)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(SOURCES))
    _, body, _, _ = _source(name)
    data = bytearray(body[: 64 * 1024])  # the headers are where the structure lives
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "length", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "length" and at + 4 <= len(data):  # a 32-bit length from nowhere
            value = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFF0, 1 << 31, 0, 7]))
            data[at : at + 4] = struct.pack("<I", value)
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return name, bytes(data)


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_is_accepted_as_it_is(name: str, tmp_path: Path) -> None:
    """The mutations start from data sets the check accepts, so refusals are theirs."""
    meta, body, sop_class, sop_instance = _source(name)
    path = tmp_path / "in.dcm"
    path.write_bytes(meta + body)
    read_checked(path, sop_class, sop_instance)


@settings(max_examples=400, deadline=2000, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(mutated())
def test_mutated_data_sets_are_stored_or_refused_with_a_documented_status(
    case: tuple[str, bytes],
) -> None:
    name, body = case
    meta, _, sop_class, sop_instance = _source(name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.dcm"
        path.write_bytes(meta + body)
        try:
            read_checked(path, sop_class, sop_instance)
        except RejectedInstance as exc:
            assert exc.status in DOCUMENTED, f"{name}: {exc}"
