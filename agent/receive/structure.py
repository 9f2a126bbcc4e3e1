"""Walk a received data set's encoding before pydicom reads it.

pydicom trusts what it reads: it inflates a deflated data set whole in memory, reads an
element's declared length as far as the file goes, and recurses once per nested
sequence. So every element header is checked here first, streaming and in bounded
memory: declared lengths must fit inside the bytes present and inside their enclosing
item or sequence, undefined lengths only where the standard allows them, sequences
nest at most ``max_depth`` deep, and a deflated data set is inflated chunk by chunk and
refused once it grows past ``max_inflated``. Values are skipped, never loaded.

Statuses: 0xC210 for a data set that lies about its structure, 0xA700 for one that is
larger than this site accepts (the data may be valid; a larger limit would take it).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from agent.errors import OutOfResources, RejectedInstance

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}  # fmt: skip
_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO",
                    b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}  # fmt: skip
_CHUNK = 1 << 16  # inflate and skip in pieces this big: memory stays flat


@dataclass(frozen=True)
class Limits:
    max_depth: int  # sequences inside sequences
    max_inflated: int  # bytes a deflated data set may inflate to
    max_dataset: int  # bytes of data set (after the file meta) as received


def bad(reason: str) -> RejectedInstance:
    return RejectedInstance(0xC210, reason)


class _Source:
    """Bytes of the data set with a position; ``end`` is None while it is not yet known."""

    pos = 0
    end: int | None = None

    def read(self, n: int) -> bytes:
        raise NotImplementedError

    def skip(self, n: int) -> None:
        raise NotImplementedError

    def at_end(self) -> bool:
        raise NotImplementedError

    def peek(self, n: int) -> bytes:
        raise NotImplementedError


class _FileSource(_Source):
    def __init__(self, fh: BinaryIO, start: int, size: int) -> None:
        self.fh, self.start, self.end = fh, start, size - start
        fh.seek(start)

    def read(self, n: int) -> bytes:
        assert self.end is not None
        if self.pos + n > self.end:
            raise bad(f"data set ends inside an element header at byte {self.pos}")
        data = self.fh.read(n)
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        assert self.end is not None
        if self.pos + n > self.end:
            raise bad(
                f"an element at byte {self.pos} declares {n} B; {self.end - self.pos} B remain"
            )
        self.pos += n
        self.fh.seek(self.start + self.pos)

    def at_end(self) -> bool:
        return self.pos == self.end

    def peek(self, n: int) -> bytes:
        data = self.fh.read(n)
        self.fh.seek(self.start + self.pos)
        return data


class _InflateSource(_Source):
    """A raw deflate stream (PS3.5 A.5), inflated as it is walked, never more than a chunk."""

    def __init__(self, fh: BinaryIO, start: int, limit: int) -> None:
        fh.seek(start)
        self.fh, self.limit = fh, limit
        self.z = zlib.decompressobj(-zlib.MAX_WBITS)
        self.buf = bytearray()
        self.off = 0  # bytes of buf already walked; dropped once a chunk's worth
        self.inflated = 0

    def _left(self) -> int:
        return len(self.buf) - self.off

    def _fill(self, want: int) -> None:
        if self.off >= _CHUNK:
            del self.buf[: self.off]
            self.off = 0
        while self._left() < want and not self.z.eof:
            data = self.z.unconsumed_tail or self.fh.read(_CHUNK)
            try:
                out = self.z.decompress(data, _CHUNK)  # max_length: a bomb inflates by chunks
            except zlib.error as exc:
                raise bad(f"deflated data set is corrupt: {exc}") from exc
            if not out and not data:
                return  # input exhausted: the stream is truncated
            self.inflated += len(out)
            if self.inflated > self.limit:
                raise OutOfResources(
                    f"deflated data set inflates past dicom.max_inflated_bytes {self.limit} B"
                )
            self.buf += out

    def read(self, n: int) -> bytes:
        self._fill(n)
        if self._left() < n:
            raise bad(f"data set ends inside an element header at byte {self.pos}")
        data = bytes(self.buf[self.off : self.off + n])
        self.off += n
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        left = n
        while left:
            self._fill(min(left, _CHUNK))
            if not self._left():
                raise bad(f"an element at byte {self.pos} declares {n} B past the end")
            step = min(left, self._left())
            self.off += step
            left -= step
        self.pos += n

    def at_end(self) -> bool:
        self._fill(1)
        return not self._left()

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self.buf[self.off : self.off + n])


class _Walker:
    def __init__(self, src: _Source, implicit: bool, little: bool, max_depth: int) -> None:
        self.src, self.implicit, self.max_depth = src, implicit, max_depth
        self.order = "<" if little else ">"

    def dataset(self, end: int | None, depth: int, implicit: bool) -> None:
        """Elements up to ``end``; with None, up to an Item Delimitation (or the very end)."""
        src = self.src
        while True:
            if end is not None and src.pos >= end:
                if src.pos > end:
                    raise bad(f"an element runs past the end of its item at byte {end}")
                return
            if end is None and depth == 0 and src.at_end():
                return
            tag = self._tag()
            if tag == _ITEM_END and end is None and depth > 0:
                self.src.read(4)
                return
            if tag in (_ITEM, _ITEM_END, _SEQ_END):
                raise bad(f"unexpected delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            self._element(tag, depth, implicit)

    def _tag(self) -> int:
        group, elem = struct.unpack(self.order + "HH", self.src.read(4))
        return int(group) << 16 | int(elem)

    def _length(self, size: int) -> int:
        return int(struct.unpack(self.order + ("I" if size == 4 else "H"), self.src.read(size))[0])

    def _element(self, tag: int, depth: int, implicit: bool) -> None:
        if implicit:
            vr, length = _dictionary_vr(tag), self._length(4)
        else:
            raw_vr = self.src.read(2)
            if raw_vr not in _VRS:
                raise bad(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has no valid VR")
            vr = raw_vr.decode()
            if raw_vr in _LONG_VRS:
                self.src.read(2)
                length = self._length(4)
            else:
                length = self._length(2)
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if length == _UNDEFINED:
            if vr == "SQ":
                self.sequence(None, depth + 1, implicit)
            elif tag == _PIXEL_DATA or vr in ("OB", "OW", "OB or OW"):
                self.fragments(where)
            elif vr == "UN" or implicit:
                self.sequence(None, depth + 1, True)  # PS3.5 6.2.2: UN of undefined length
            else:
                raise bad(f"element {where} ({vr}) cannot have an undefined length")
        elif vr == "SQ" or (vr == "UN" and _dictionary_vr(tag) == "SQ"):
            # pydicom parses a UN whose tag is a known sequence as one (replace_un_with_known_vr)
            self.sequence(self.src.pos + length, depth + 1, implicit or vr == "UN")
        else:
            self.src.skip(length)

    def sequence(self, end: int | None, depth: int, implicit: bool) -> None:
        if depth > self.max_depth:
            raise bad(f"sequences nest deeper than dicom.max_sequence_depth {self.max_depth}")
        src = self.src
        while True:
            if end is not None and src.pos >= end:
                if src.pos > end:
                    raise bad(f"an item runs past the end of its sequence at byte {end}")
                return
            tag = self._tag()
            length = self._length(4)
            if tag == _SEQ_END and end is None:
                return
            if tag != _ITEM:
                raise bad(f"sequence holds ({tag >> 16:04X},{tag & 0xFFFF:04X}), not an item")
            if length == _UNDEFINED:
                self.dataset(None, depth, implicit)
            else:
                self.dataset(src.pos + length, depth, implicit)

    def fragments(self, where: str) -> None:
        """Encapsulated pixel data: items of defined length up to a Sequence Delimitation."""
        while True:
            tag = self._tag()
            length = self._length(4)
            if tag == _SEQ_END:
                return
            if tag != _ITEM or length == _UNDEFINED:
                raise bad(f"encapsulated {where} holds a malformed fragment")
            self.src.skip(length)


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"  # private and unknown tags


def walk(fh: BinaryIO, start: int, size: int, transfer_syntax: str, limits: Limits) -> None:
    """Check the data set in ``fh[start:size]``; raise RejectedInstance when it is refused."""
    if size - start > limits.max_dataset:
        raise OutOfResources(
            f"data set of {size - start} B exceeds dicom.max_dataset_bytes {limits.max_dataset} B"
        )
    src: _Source
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        src = _InflateSource(fh, start, limits.max_inflated)
    else:
        src = _FileSource(fh, start, size)
    implicit = transfer_syntax == ImplicitVRLittleEndian
    if not implicit and src.peek(6)[4:6] not in _VRS:
        implicit = True  # as pydicom does: real files say explicit and are implicit
    walker = _Walker(src, implicit, transfer_syntax != ExplicitVRBigEndian, limits.max_depth)
    walker.dataset(None, 0, implicit)
