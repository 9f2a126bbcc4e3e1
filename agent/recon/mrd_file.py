"""Offline reconstruction of MRD data for ``scanner-agent inspect``: a saved MRD stream
(what ``ismrmrd.ProtocolSerializer`` writes to a file) or an ISMRMRD HDF5 file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from agent.recon.mrd_dicom import SeriesContext, session_key, to_dataset
from agent.recon.mrd_protocol import Message, MessageId, MrdLimits, parse_header, read_message_sync
from agent.recon.mrd_recon import reconstruct
from agent.recon.mrd_session import MrdSession, SliceJob, feed, no_image_reason
from kernels.device import Device

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_mrd_file(path: Path) -> bool:
    """True for an ISMRMRD HDF5 file or a file that starts like an MRD stream."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    if head == _HDF5_MAGIC:
        return True
    return len(head) >= 2 and int.from_bytes(head[:2], "little") in (1, 2, 3)


def reconstruct_file(
    path: str | Path, limits: MrdLimits | None = None, device: Device = "cpu",
    notes: dict[str, list[tuple[str, str]]] | None = None,
) -> list[Dataset]:  # fmt: skip
    """Reconstruct every complete slice of an MRD file into DICOM MR images.

    Raises MrdProtocolError for a malformed stream and ValueError for a file that is
    neither or that yields no image (saying why); incomplete slices at the end are dropped.
    ``notes`` gets, per series UID, the (code, message) warnings reconstruction made."""
    p = Path(path)
    session = MrdSession(limits)
    with p.open("rb") as f:
        hdf5 = f.read(8) == _HDF5_MAGIC
    messages = _hdf5_messages(p) if hdf5 else _stream_messages(p, session.limits)
    out: list[Dataset] = []
    ctx: SeriesContext | None = None
    for msg in messages:
        job = feed(session, msg)
        if msg.id == MessageId.HEADER:
            ctx = _context(session, p)
        if job is not None:
            assert ctx is not None
            out.append(_image(job, ctx, device))
    dropped = session.discard()
    if not out:
        raise ValueError("no image: " + no_image_reason(
            session, refused=None, failed=0, first_error=None, dropped=dropped))  # fmt: skip
    if notes is not None and ctx is not None and ctx.warnings:
        notes.setdefault(ctx.series_uid, []).extend(ctx.warnings)
    return out


def _image(job: SliceJob, ctx: SeriesContext, device: Device) -> Dataset:
    return to_dataset(reconstruct(job, device), ctx)


def _context(session: MrdSession, path: Path) -> SeriesContext:
    assert session.encoding is not None
    key = session_key(session.xml, str(path.resolve()), 0.0)
    return SeriesContext.create(session.header, session.encoding, f"MRD file {path.name}", key)


def _stream_messages(path: Path, limits: MrdLimits) -> Iterator[Message]:
    with path.open("rb") as f:
        while True:
            msg = read_message_sync(f.read, limits)
            if msg.id == MessageId.CLOSE:
                return
            yield msg


def _hdf5_messages(path: Path) -> Iterator[Message]:
    import h5py  # type: ignore[import-untyped]
    import ismrmrd

    with h5py.File(path, "r") as f:
        names = [k for k in f if isinstance(f[k], h5py.Group) and "xml" in f[k]]
    if not names:
        raise ValueError(f"{path}: no ISMRMRD data set (a group with 'xml') in the HDF5 file")
    with ismrmrd.Dataset(str(path), names[0], mode="r") as dset:
        xml: Any = dset.read_xml_header()
        raw = xml if isinstance(xml, bytes) else str(xml).encode()
        yield Message(MessageId.HEADER, parse_header(raw), raw)
        for i in range(dset.number_of_acquisitions()):
            yield Message(MessageId.ACQUISITION, dset.read_acquisition(i))
