"""A raw pynetdicom SCU that sends files' bytes as they are, malformed ones included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, Association, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]


class _ChunkedSend:
    """pynetdicom's chunked-send switch is one global: concurrent senders (threads) set it
    together, and the last one out puts back what was there before the first came in (each
    restoring its own 'before' left it on after a concurrent test, for every test after)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        # With chunked sending pynetdicom streams the file's data set bytes without decoding
        # them, which is the only way to put a truncated or garbage data set on the wire.
        with self._lock:
            if self._users == 0:
                self._before = _config.STORE_SEND_CHUNKED_DATASET
                _config.STORE_SEND_CHUNKED_DATASET = True
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    _config.STORE_SEND_CHUNKED_DATASET = self._before


_chunked_send = _ChunkedSend()


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
