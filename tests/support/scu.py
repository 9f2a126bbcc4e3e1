"""A raw pynetdicom SCU that sends files' bytes as they are, malformed ones included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, Association, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]


@contextmanager
def _chunked_send() -> Iterator[None]:
    # With chunked sending pynetdicom streams the file's data set bytes without decoding
    # them, which is the only way to put a truncated or garbage data set on the wire.
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def _meta(path: Path) -> tuple[str, str]:
    # The file meta only: the data set may be hostile (a deflate bomb, a lying length).
    meta = read_file_meta_info(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def send_files(
    port: int, paths: list[Path], *, called: str = "EDGE", calling: str = "SCANNER"
) -> list[int | None]:
    """C-STORE each file over one association; returns each status (None: no response)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class, ts in sorted({_meta(p) for p in paths}):
        ae.add_requested_context(sop_class, ts)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise ConnectionError(f"association with 127.0.0.1:{port} was not established")
    statuses: list[int | None] = []
    with _chunked_send():
        for path in paths:
            rsp = assoc.send_c_store(path)
            statuses.append(int(rsp.Status) if "Status" in rsp else None)
    assoc.release()
    return statuses


def associate(port: int) -> Association:
    """An open association to the agent at ``port`` (Verification and CT Image Storage)."""
    ae = AE(ae_title="SCANNER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", port, ae_title="EDGE")
