"""The MRD (ISMRMRD) raw-data listener: a Gadgetron-compatible TCP endpoint.

One task group per connection holds two tasks joined by a bounded stream of complete
slices: the *reader* parses messages strictly (:mod:`agent.recon.mrd_protocol`) and gathers
readouts (:class:`~agent.recon.mrd_session.MrdSession`); the *reconstructor* runs each slice's
reconstruction and DICOM encoding in a worker thread (``anyio.to_thread`` with a shared
limiter, so the event loop never blocks), awaits ``on_image(ds)``, and, when
``send_back`` is set, writes the image back as an MRD IMAGE message (float32 magnitude),
as Gadgetron clients expect, followed by CLOSE once the client's CLOSE is answered.

A bad stream (truncated, unknown message id, a header the data contradicts, a message or
slice larger than the limits) ends only its own connection, with one WARNING naming the
peer and the reason; slices completed before the fault are still delivered, incomplete
ones are dropped, and nothing of the connection stays in memory. A slice whose
reconstruction fails is logged and skipped. If ``on_image`` raises (e.g. the spool is
full), the connection is aborted so the sender sees the failure instead of losing data.

A connection that carried data but yielded no image at all raises an ``mrd.no-image``
system alert naming why (refused, slices that failed, no slice ever complete). A warning
reconstruction made (no orientation in the data: axial assumed) is noted on the series in
the journal before its first image is stored, so the verdict carries it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from ismrmrd import Image
from pydicom.dataset import Dataset

from agent.config import MrdConfig
from agent.journal import series_notes
from agent.journal.database import Journal
from agent.recon.mrd_dicom import SeriesContext, session_key, to_dataset
from agent.recon.mrd_protocol import (
    MessageId,
    MrdLimits,
    MrdProtocolError,
    encode,
    encode_close,
    read_message,
)
from agent.recon.mrd_recon import ReconImage, reconstruct
from agent.recon.mrd_session import MrdSession, SliceJob, feed, no_image_reason
from kernels.device import Device

log = logging.getLogger(__name__)

OnImage = Callable[[Dataset], Awaitable[None]]
Alert = Callable[[str, str], Awaitable[None]]  # (code, message): a system alert
_BAD_DATA = (MrdProtocolError, ValueError, TypeError, OverflowError, IndexError)
IMTYPE_MAGNITUDE = 1


@dataclass(frozen=True)
class Result:
    """One reconstructed slice: the DICOM data set and, optionally, its MRD image bytes."""

    dataset: Dataset
    mrd_image: bytes
    image: ReconImage
    done_at: float  # perf_counter when the data set was ready


def process(job: SliceJob, ctx: SeriesContext, device: Device, mrd: bool) -> Result:
    """Reconstruct and encode one slice (blocking; runs in a worker thread)."""
    image = reconstruct(job, device)
    ds = to_dataset(image, ctx)
    payload = encode(mrd_image(image, ctx)) if mrd else b""
    return Result(ds, payload, image, time.perf_counter())


def mrd_image(image: ReconImage, ctx: SeriesContext) -> Any:
    """The image as an ``ismrmrd.Image`` (float32 magnitude) with its geometry."""
    img = Image.from_array(np.ascontiguousarray(image.pixels[None], dtype=np.float32))
    g = image.geometry
    img.position, img.read_dir, img.phase_dir = g.position, g.read_dir, g.phase_dir
    img.slice_dir, img.patient_table_position = g.slice_dir, g.table_position
    img.field_of_view = image.fov
    img.slice, img.contrast, img.repetition = image.key[0], image.key[1], image.key[2]
    img.phase, img.set = image.key[3], image.key[4]
    img.measurement_uid = g.measurement_uid
    img.acquisition_time_stamp = g.acquisition_time_stamp
    img.image_type = IMTYPE_MAGNITUDE
    img.image_index = ctx.instance_number(image.key)
    img.image_series_index = ctx.series_number
    return img


class _Connection:
    def __init__(self, peer: str, limits: MrdLimits) -> None:
        self.peer = peer
        self.session = MrdSession(limits)
        self.context: SeriesContext | None = None
        self.started = time.time()
        self.closed_cleanly = False
        self.failed = False
        self.images = 0
        self.messages = 0
        self.refused: str | None = None  # why the stream was ended, if it was
        self.slice_errors = 0
        self.first_error: str | None = None
        self.dropped = 0
        self.noted = 0  # warnings of the context already noted in the journal


class MrdServer:
    """Listens on ``cfg.bind``:``cfg.port``; ``await serve()`` until cancelled or stop()."""

    def __init__(
        self,
        cfg: MrdConfig,
        on_image: OnImage,
        *,
        send_back: bool = True,
        limits: MrdLimits | None = None,
        device: Device = "cpu",
        workers: int = 2,
        warmup: bool = True,
        journal: Journal | None = None,
        alert: Alert | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_image = on_image
        self.send_back = send_back
        self.limits = limits or _limits_from(cfg)
        self.device = device
        self.warmup = warmup
        self.journal = journal
        self.alert = alert
        self._limiter = anyio.CapacityLimiter(workers)
        self._port: int | None = None
        self._scope: anyio.CancelScope | None = None
        self.connections = 0  # served since start
        self.active = 0  # open now
        self.on_result: Callable[[Result], None] | None = None  # for benchmarks: latency
        self.accepting: Callable[[], bool] = lambda: True  # False: new connections refused

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the MRD server is not listening yet")
        return self._port

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled or :meth:`stop`; reports the port to
        ``TaskGroup.start``. Open connections are cancelled on the way out."""
        if self.warmup:
            from kernels.mri import warmup

            await anyio.to_thread.run_sync(warmup, limiter=self._limiter)
        listener = await anyio.create_tcp_listener(
            local_host=self.cfg.bind, local_port=self.cfg.port, reuse_port=False
        )
        self._port = int(listener.extra(SocketAttribute.local_port))
        log.info("MRD listener on %s:%d", self.cfg.bind, self._port)
        with anyio.CancelScope() as scope:
            self._scope = scope
            task_status.started(self._port)
            async with listener:
                await listener.serve(self._connection)
        log.info("MRD listener stopped")

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _connection(self, stream: SocketStream) -> None:
        if not self.accepting():  # the daemon's storage is full
            log.warning("MRD %s: refused, storage is full", _peer(stream))
            await stream.aclose()
            return
        if self.active >= self.cfg.max_connections:  # a flood must not take every worker
            log.warning("MRD %s: refused, %d connections already open (mrd.max_connections)",
                        _peer(stream), self.active)  # fmt: skip
            await stream.aclose()
            return
        self.active += 1
        try:
            await self._serve_connection(stream)
        finally:
            self.active -= 1

    async def _serve_connection(self, stream: SocketStream) -> None:
        self.connections += 1
        conn = _Connection(_peer(stream), self.limits)
        log.info("MRD %s: connected", conn.peer)
        send, receive = anyio.create_memory_object_stream[SliceJob](2)
        try:
            async with stream, anyio.create_task_group() as tg:
                tg.start_soon(self._reconstructor, receive, conn, stream, tg.cancel_scope)
                await self._reader(stream, send, conn)
        except Exception:  # never let one connection take the agent down
            log.exception("MRD %s: connection failed", conn.peer)
        finally:
            conn.session.discard()
        log.info("MRD %s: closed after %d images", conn.peer, conn.images)
        if conn.images == 0 and conn.messages > 0:
            why = no_image_reason(conn.session, refused=conn.refused, failed=conn.slice_errors,
                                  first_error=conn.first_error, dropped=conn.dropped)  # fmt: skip
            log.warning("MRD %s: no image: %s", conn.peer, why)
            if self.alert is not None:
                await self.alert(
                    "mrd.no-image", f"MRD stream from {conn.peer} yielded no image: {why}"
                )

    async def _reader(
        self, stream: SocketStream, send: MemoryObjectSendStream[SliceJob], conn: _Connection
    ) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with send:
            try:
                await self._read_messages(reader, send, conn)
            except _BAD_DATA as exc:
                conn.failed = True
                conn.refused = str(exc)[:300]
                log.warning("MRD %s: closing the connection: %s", conn.peer, exc)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                conn.failed = True
                conn.refused = f"connection lost: {exc or type(exc).__name__}"[:300]
                log.warning("MRD %s: connection lost: %s", conn.peer, exc or type(exc).__name__)
            dropped = conn.dropped = conn.session.discard()
            if dropped:
                log.warning("MRD %s: %d incomplete slices dropped", conn.peer, dropped)

    async def _read_messages(
        self, reader: BufferedByteReceiveStream, send: MemoryObjectSendStream[SliceJob],
        conn: _Connection,
    ) -> None:  # fmt: skip
        while True:
            try:
                with anyio.fail_after(self.cfg.idle_timeout_s):
                    msg = await read_message(reader, self.limits)
            except TimeoutError:
                conn.failed = True
                log.warning("MRD %s: closing the connection: silent for %.0f s (mrd.idle_timeout_s)",
                            conn.peer, self.cfg.idle_timeout_s)  # fmt: skip
                return
            if msg.id == MessageId.CLOSE:
                conn.closed_cleanly = True
                return
            conn.messages += 1
            job = feed(conn.session, msg)
            if msg.id == MessageId.HEADER:
                conn.context = _context(conn)
            if job is not None:
                await send.send(job)

    async def _reconstructor(
        self, receive: MemoryObjectReceiveStream[SliceJob], conn: _Connection,
        stream: SocketStream, scope: anyio.CancelScope,
    ) -> None:  # fmt: skip
        async with receive:
            async for job in receive:
                assert conn.context is not None
                try:
                    result = await anyio.to_thread.run_sync(
                        process, job, conn.context, self.device, self.send_back,
                        limiter=self._limiter,
                    )  # fmt: skip
                except _BAD_DATA as exc:
                    log.warning("MRD %s: slice %s not reconstructed: %s", conn.peer, job.key, exc)
                    conn.slice_errors += 1
                    conn.first_error = conn.first_error or str(exc)[:300]
                    continue
                if not await self._deliver(result, conn, stream):
                    scope.cancel()
                    return
            if self.send_back and conn.closed_cleanly and not conn.failed:
                await _send(stream, encode_close(), conn)

    async def _deliver(self, result: Result, conn: _Connection, stream: SocketStream) -> bool:
        try:
            await self._note(conn)
            await self.on_image(result.dataset)
        except Exception:
            log.exception("MRD %s: image not stored; aborting the connection", conn.peer)
            return False
        conn.images += 1
        if self.on_result is not None:
            self.on_result(result)
        if self.send_back and not conn.failed:
            await _send(stream, result.mrd_image, conn)
        return True

    async def _note(self, conn: _Connection) -> None:
        """Record the context's new warnings on its series before the image that has them."""
        ctx = conn.context
        if ctx is None or len(ctx.warnings) == conn.noted:
            return
        for code, message in ctx.warnings[conn.noted :]:
            log.warning("MRD %s: series %s: %s", conn.peer, ctx.series_uid, message)
            if self.journal is not None:
                await anyio.to_thread.run_sync(
                    series_notes.record, self.journal, ctx.series_uid, code, message
                )
        conn.noted = len(ctx.warnings)


async def _send(stream: SocketStream, data: bytes, conn: _Connection) -> None:
    try:
        await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
        if not conn.failed:
            log.warning("MRD %s: cannot send back: %s", conn.peer, exc or type(exc).__name__)
        conn.failed = True


def _context(conn: _Connection) -> SeriesContext:
    s = conn.session
    assert s.encoding is not None
    key = session_key(s.xml, conn.peer, conn.started)
    return SeriesContext.create(s.header, s.encoding, f"MRD stream from {conn.peer}", key)


def _peer(stream: SocketStream) -> str:
    try:
        addr = stream.extra(SocketAttribute.remote_address)
    except Exception:
        return "unknown peer"
    if isinstance(addr, tuple):
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def _limits_from(cfg: MrdConfig) -> MrdLimits:
    return MrdLimits(
        max_message_bytes=int(cfg.max_message_bytes),
        max_slice_bytes=int(cfg.max_slice_bytes),
        max_open_bytes=int(cfg.max_open_bytes),
    )
