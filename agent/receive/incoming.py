"""The file pynetdicom streams a C-STORE's data set into, made safe for a full disk.

pynetdicom writes each P-DATA fragment into a NamedTemporaryFile from its DUL thread; when
the disk is full that write raises there, the association breaks and the sender never
gets a response. This stand-in catches ENOSPC (and EDQUOT, EFBIG), stops writing, gives
the space back at once by truncating, and remembers why; it also stops at
``dicom.max_dataset_bytes`` so one huge transfer cannot fill the disk. The C-STORE
handler asks :func:`failure` and answers 0xA700 instead of reading a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from agent.errors import OutOfResources
from agent.journal.space import space_for

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

_open: weakref.WeakValueDictionary[str, IncomingFile] = weakref.WeakValueDictionary()
_lock = threading.Lock()


class IncomingFile:
    """The subset of NamedTemporaryFile pynetdicom uses: name, write, file.flush, close."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.fd, self.name = tempfile.mkstemp(dir=folder, suffix=".dcm")
        self.file = self  # pynetdicom calls ``.file.flush()`` after every fragment
        self.limit = limit
        self.written = 0
        self.error: OutOfResources | None = None
        self.space = space_for(folder.parent)  # the storage directory incoming/ is in
        self._closed = False
        with _lock:
            _open[self.name] = self

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.error is not None:
            return len(view)  # swallowed: the handler answers 0xA700 at the end
        if self.space.paused:  # the room left belongs to the journal until space returns
            self._fail(f"storage is full, intake paused: {self.space.reason}")
            return len(view)
        if self.written + len(view) > self.limit:
            self._fail(f"data set exceeds dicom.max_dataset_bytes {self.limit} B")
            return len(view)
        try:
            while view:  # os.write may write less than asked, near a full disk above all
                done = os.write(self.fd, view)
                self.written += done
                view = view[done:]
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            self._fail(f"cannot write the incoming data set: {exc.strerror}")
            self.space.pause(f"receive: {exc.strerror}")
        return len(data)

    def flush(self) -> None:
        """Writes are unbuffered; durability is the spool's fsync before the ACK."""

    def _fail(self, reason: str) -> None:
        self.error = OutOfResources(reason)
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # the rest of the transfer is discarded; free the disk now

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)

    def __del__(self) -> None:
        # Never closed: the association ended mid data set, and the file helps no one.
        if not self._closed:
            self.close()
            Path(self.name).unlink(missing_ok=True)


def failure(path: Path | str) -> OutOfResources | None:
    """Why the data set streamed to ``path`` is incomplete; None when it was written whole."""
    with _lock:
        incoming = _open.get(str(path))
    return incoming.error if incoming is not None else None


def factory(folder: Path, limit: int) -> Any:
    """A replacement for pynetdicom's ``NamedTemporaryFile(delete=False, mode="wb", ...)``."""

    def make(**_kwargs: Any) -> IncomingFile:
        return IncomingFile(folder, limit)

    return make
