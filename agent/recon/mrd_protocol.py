"""The MRD (ISMRMRD) streaming protocol, read strictly and written as ``ismrmrd`` writes it.

Framing (``ismrmrd.serialization.ProtocolSerializer``, little-endian): every message is a
``uint16`` message id followed by its payload:

    1 CONFIG_FILE   1024 bytes, NUL-padded
    2 CONFIG_TEXT   uint32 length, UTF-8 text
    3 HEADER        uint32 length, the XML header
    4 CLOSE         nothing: the sender is done
    5 TEXT          uint32 length, UTF-8 text
    1008 ACQUISITION  AcquisitionHeader (340 bytes), trajectory float32 (samples x dims),
                      data complex64 (channels x samples)
    1022 IMAGE        ImageHeader (198 bytes), uint64 attribute length, attribute text,
                      data (channels x z x y x x of the header's data type)
    1026 WAVEFORM     WaveformHeader (40 bytes), uint32 data (channels x samples)
    1030 NDARRAY      uint16 type, uint16 version, uint16 ndim, uint64 dims..., data

The package's own ``ProtocolDeserializer`` trusts every length it reads (a 4 GiB TEXT
length allocates 4 GiB), so the reader here is strict: each payload's size is computed
from its fixed header and checked against :class:`MrdLimits` *before* it is read. The
parser is a generator that asks for byte counts (sans I/O), driven by
:func:`read_message` (anyio stream) or :func:`read_message_sync` (a file).

Errors: :class:`MrdProtocolError` (the stream is malformed or too large) and its
subclass :class:`MrdTruncated` (the peer stopped mid-message or without CLOSE).
"""

from __future__ import annotations

import ctypes
import io
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import anyio
import numpy as np
from anyio.streams.buffered import BufferedByteReceiveStream
from ismrmrd import Acquisition, AcquisitionHeader, Image, ImageHeader
from ismrmrd.serialization import ConfigText, ProtocolSerializer
from ismrmrd.waveform import WaveformHeader
from ismrmrd.xsd import CreateFromDocument


class MessageId(IntEnum):
    """Message ids, equal to ``ismrmrd.serialization.ISMRMRDMessageID``."""

    CONFIG_FILE = 1
    CONFIG_TEXT = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    ACQUISITION = 1008
    IMAGE = 1022
    WAVEFORM = 1026
    NDARRAY = 1030


class MrdProtocolError(Exception):
    """The stream is malformed, contradicts its header, or asks for too much memory."""


class MrdTruncated(MrdProtocolError):
    """The stream ended in the middle of a message, or without a CLOSE message."""


@dataclass(frozen=True)
class MrdLimits:
    """Caps on what one connection may make us allocate."""

    max_message_bytes: int = 64 << 20  # one message's payload
    max_slice_bytes: int = 512 << 20  # one slice's k-space buffer
    max_open_bytes: int = 1 << 30  # all k-space buffers of one connection together
    max_header_bytes: int = 1 << 20  # the XML header and text messages


@dataclass(frozen=True)
class Message:
    """One decoded message. ``value`` depends on ``id``: str (config/text), the parsed
    ``ismrmrdHeader`` (HEADER, with the raw XML in ``raw``), ``ismrmrd.Acquisition``,
    ``ismrmrd.Image``, ``np.ndarray`` (NDARRAY), or None (CLOSE, WAVEFORM: skipped)."""

    id: MessageId
    value: Any = None
    raw: bytes = b""


_ACQ_HEAD = ctypes.sizeof(AcquisitionHeader)
_IMG_HEAD = ctypes.sizeof(ImageHeader)
_WAV_HEAD = ctypes.sizeof(WaveformHeader)
_CONFIG_FILE_SIZE = 1024
_IMAGE_DTYPES = {1: "<u2", 2: "<i2", 3: "<u4", 4: "<i4", 5: "<f4", 6: "<f8", 7: "<c8", 8: "<c16"}

Steps = Generator[int, bytes, Message]


def _check_size(what: str, nbytes: int, cap: int) -> int:
    if nbytes > cap:
        raise MrdProtocolError(f"{what} of {nbytes} bytes exceeds the limit of {cap} bytes")
    return nbytes


def _parse(limits: MrdLimits) -> Steps:
    """The message parser: yields how many bytes it needs next, receives them."""
    raw_id = yield 2
    (value,) = struct.unpack("<H", raw_id)
    try:
        mid = MessageId(value)
    except ValueError:
        raise MrdProtocolError(f"unknown message id {value}") from None
    if mid == MessageId.CLOSE:
        return Message(mid)
    if mid == MessageId.ACQUISITION:
        return (yield from _acquisition(limits))
    if mid == MessageId.IMAGE:
        return (yield from _image(limits))
    if mid == MessageId.WAVEFORM:
        return (yield from _waveform(limits))
    if mid == MessageId.NDARRAY:
        return (yield from _ndarray(limits))
    if mid == MessageId.CONFIG_FILE:
        payload = yield _CONFIG_FILE_SIZE
        return Message(mid, _text(payload.rstrip(b"\0"), "config file"))
    (length,) = struct.unpack("<I", (yield 4))
    body = yield _check_size(f"{mid.name} message", length, limits.max_header_bytes)
    if mid == MessageId.HEADER:
        return Message(mid, parse_header(body), body)
    return Message(mid, _text(body, mid.name))


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MrdProtocolError(f"{what} is not UTF-8: {exc}") from None


def parse_header(xml: bytes) -> Any:
    """Parse the XML header with the package's schema; no DTDs or entities allowed."""
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise MrdProtocolError("XML header declares a DTD or entities")
    try:
        return CreateFromDocument(xml)
    except Exception as exc:  # xsdata raises parser errors of several kinds
        raise MrdProtocolError(f"XML header does not parse: {exc}") from None


def _acquisition(limits: MrdLimits) -> Steps:
    head_bytes = yield _ACQ_HEAD
    head = AcquisitionHeader.from_buffer_copy(head_bytes)
    ns, nc, nd = head.number_of_samples, head.active_channels, head.trajectory_dimensions
    traj_n, data_n = ns * nd * 4, ns * nc * 8
    _check_size("acquisition", traj_n + data_n, limits.max_message_bytes)
    traj = np.frombuffer((yield traj_n), dtype="<f4").reshape(ns, nd) if traj_n else None
    data = np.frombuffer((yield data_n), dtype="<c8").reshape(nc, ns) if data_n else None
    if data is None:
        data = np.zeros((nc, ns), dtype=np.complex64)
    if traj is None:
        traj = np.zeros((ns, nd), dtype=np.float32)
    return Message(MessageId.ACQUISITION, Acquisition(head, data, traj))


def _image(limits: MrdLimits) -> Steps:
    head_bytes = yield _IMG_HEAD
    head = ImageHeader.from_buffer_copy(head_bytes)
    dtype = _IMAGE_DTYPES.get(head.data_type)
    if dtype is None:
        raise MrdProtocolError(f"image data type {head.data_type} is unknown")
    (attr_len,) = struct.unpack("<Q", (yield 8))
    _check_size("image attributes", attr_len, limits.max_header_bytes)
    attrs = (yield attr_len) if attr_len else b""
    nx, ny, nz = head.matrix_size
    n = int(head.channels) * nx * ny * nz
    nbytes = _check_size("image", n * np.dtype(dtype).itemsize, limits.max_message_bytes)
    pixels = np.frombuffer((yield nbytes), dtype=dtype) if nbytes else np.zeros(0, dtype)
    shape = (head.channels, nz, ny, nx)
    data = pixels.reshape(shape).astype(pixels.dtype.newbyteorder("="))
    image = Image(head)  # the attribute XML is kept raw, never parsed
    image.data[:] = data
    return Message(MessageId.IMAGE, image, attrs.rstrip(b"\0"))


def _waveform(limits: MrdLimits) -> Steps:
    head = WaveformHeader.from_buffer_copy((yield _WAV_HEAD))
    nbytes = int(head.channels) * int(head.number_of_samples) * 4
    if nbytes:
        yield _check_size("waveform", nbytes, limits.max_message_bytes)
    return Message(MessageId.WAVEFORM)  # physiology waveforms are not used for reconstruction


def _ndarray(limits: MrdLimits) -> Steps:
    dtype_id, _version, ndim = struct.unpack("<HHH", (yield 6))
    dtype = _IMAGE_DTYPES.get(dtype_id)
    if dtype is None or ndim > 7:
        raise MrdProtocolError(f"NDArray with data type {dtype_id} and {ndim} dimensions")
    dims = struct.unpack(f"<{ndim}Q", (yield 8 * ndim)) if ndim else ()
    count = 1
    for d in dims:
        count *= d
        _check_size("NDArray", count * np.dtype(dtype).itemsize, limits.max_message_bytes)
    nbytes = count * np.dtype(dtype).itemsize
    arr = np.frombuffer((yield nbytes), dtype=dtype) if nbytes else np.zeros(0, dtype)
    return Message(MessageId.NDARRAY, arr.reshape(dims))


async def read_message(stream: BufferedByteReceiveStream, limits: MrdLimits) -> Message:
    """Read one message from an anyio stream; raise MrdTruncated at EOF."""
    parser = _parse(limits)
    need = next(parser)
    first = True
    while True:
        try:
            data = await stream.receive_exactly(need) if need else b""
        except (anyio.IncompleteRead, anyio.EndOfStream):
            where = "without a CLOSE message" if first else "in the middle of a message"
            raise MrdTruncated(f"stream ended {where}") from None
        first = False
        try:
            need = parser.send(data)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def read_message_sync(read: Callable[[int], bytes], limits: MrdLimits) -> Message:
    """Read one message with a blocking ``read(n)`` (a file's); raise MrdTruncated at EOF."""
    parser = _parse(limits)
    need = next(parser)
    first = True
    while True:
        data = read(need) if need else b""
        if len(data) < need:
            where = "without a CLOSE message" if first and not data else "mid-message"
            raise MrdTruncated(f"stream ended {where}")
        first = False
        try:
            need = parser.send(data)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def encode(obj: Any) -> bytes:
    """The bytes ``ismrmrd.ProtocolSerializer`` writes for one object (Image, Acquisition,
    header, ConfigText, str)."""
    buf = io.BytesIO()
    ProtocolSerializer(buf).serialize(obj)
    return buf.getvalue()


def encode_close() -> bytes:
    return struct.pack("<H", MessageId.CLOSE)


def config_text(text: str) -> Any:
    """A CONFIG_TEXT payload for :func:`encode`."""
    return ConfigText(text)
