"""The file pynetdicom streams a C-STORE's data set into, made safe for a full disk.

pynetdicom writes each P-DATA fragment into a NamedTemporaryFile from its DUL thread; when
the disk is full that write raises there, the association breaks and the sender never
gets a response. This stand-in catches ENOSPC (and EDQUOT, EFBIG), stops writing, gives
the space back at once by truncating, and remembers why; it also stops at
``dicom.max_dataset_bytes`` so one huge transfer cannot fill the disk. The C-STORE
handler asks :func:`failure` and answers 0xA700 instead of reading a partial file.

It also hashes the data set (the bytes after the file meta) as the fragments arrive, so
the handler never reads the file back for its sha256 (:func:`digest`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import struct
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

    def __init__(self, folder: Path, limit: int, prefix: str = "") -> None:
        self.fd, self.name = tempfile.mkstemp(dir=folder, prefix=prefix or "tmp", suffix=".dcm")
        self.file = self  # pynetdicom calls ``.file.flush()`` after every fragment
        self.limit = limit
        self.written = 0
        self.error: OutOfResources | None = None
        self.space = space_for(folder.parent)  # the storage directory incoming/ is in
        self._closed = False
        self._head = bytearray()  # the first bytes, until the file meta's length is known
        self._start: int | None = None  # where the data set starts, once known
        self._sha = hashlib.sha256()
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
                self._hash(view[:done])
                self.written += done
                view = view[done:]
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            self._fail(f"cannot write the incoming data set: {exc.strerror}")
            self.space.pause(f"receive: {exc.strerror}")
        return len(data)

    def _hash(self, chunk: memoryview) -> None:
        """Feed the data set's bytes to the hash; ``chunk`` was written at ``self.written``."""
        at = self.written
        if self._start is None:
            self._head += chunk[: max(0, _HEAD - at)]
            if len(self._head) < _HEAD:
                return
            self._start = _dataset_start(bytes(self._head))
        if 0 <= self._start < at + len(chunk):
            self._sha.update(chunk[max(0, self._start - at) :])

    def digest(self) -> tuple[str, int] | None:
        """sha256 of the data set and the file's size, as spool.hash_dataset gives them;
        None when the file did not start with the meta pynetdicom writes."""
        if self._start is None or self._start < 0 or self._start > self.written:
            return None
        return self._sha.hexdigest(), self.written

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


_HEAD = 144  # preamble, DICM and the File Meta group length element


def _dataset_start(head: bytes) -> int:
    """As spool.dataset_offset; -1 (no digest) for a head that is not pynetdicom's meta."""
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        return -1
    return _HEAD + int(struct.unpack("<I", head[140:144])[0])


def digest(path: Path | str) -> tuple[str, int] | None:
    """The sha256 and size :class:`IncomingFile` computed while ``path`` streamed in; None
    when unknown (the caller reads the file instead)."""
    with _lock:
        incoming = _open.get(str(path))
    return incoming.digest() if incoming is not None and incoming.error is None else None


def failure(path: Path | str) -> OutOfResources | None:
    """Why the data set streamed to ``path`` is incomplete; None when it was written whole."""
    with _lock:
        incoming = _open.get(str(path))
    return incoming.error if incoming is not None else None


def factory(folder: Path, limit: int, prefix: str = "") -> Any:
    """A replacement for pynetdicom's ``NamedTemporaryFile(delete=False, mode="wb", ...)``."""

    def make(**_kwargs: Any) -> IncomingFile:
        return IncomingFile(folder, limit, prefix)

    return make


def worker_prefix(generation: int) -> str:
    """How a receive worker's files in incoming/ begin (a dead one's are removed by it)."""
    return f"w{generation}-"


def remove_leftovers(folder: Path, generation: int) -> int:
    """Delete the partial files of a receive worker that has exited: none was acknowledged."""
    removed = 0
    for leftover in folder.glob(worker_prefix(generation) + "*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
