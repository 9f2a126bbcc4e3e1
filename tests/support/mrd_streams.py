"""MRD streams built with the ``ismrmrd`` package from analytic phantom k-space, a client
that sends them over real TCP with ``ProtocolSerializer`` and reads images back with
``ProtocolDeserializer``, and an in-process :class:`~agent.recon.mrd_server.MrdServer`."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ismrmrd
import ismrmrd.xsd as x
import numpy as np
from anyio.from_thread import start_blocking_portal
from ismrmrd.serialization import ProtocolDeserializer, ProtocolSerializer
from pydicom.dataset import Dataset

from agent.config import MrdConfig
from agent.recon.mrd_protocol import MrdLimits
from agent.recon.mrd_server import MrdServer
from tests.support.mri_phantoms import coil_coefficients, phantom_kspace
from tests.support.peers import free_port

ACQ_LAST_IN_SLICE = 8
ACQ_IS_NOISE_MEASUREMENT = 19
ACQ_IS_PARALLEL_CALIBRATION = 20
ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING = 21
FOV = 220.0
THICKNESS = 5.0


def header(
    n: int, coils: int, *, ny: int | None = None, accel: int = 1, slices: int = 1,
    trajectory: str = "cartesian", ky: tuple[int, int, int] | None = None,
    oversampled: bool = False, measurement_id: str | None = None, readout: int | None = None,
) -> Any:  # fmt: skip
    """An ISMRMRD XML header for a 2D n x ny scan."""
    ny = ny or n
    nx = readout or (2 * n if oversampled else n)
    lo, hi, c = ky or (0, ny - 1, ny // 2)
    enc = x.encodingType(
        encodedSpace=x.encodingSpaceType(
            matrixSize=x.matrixSizeType(x=nx, y=ny, z=1),
            fieldOfView_mm=x.fieldOfViewMm(x=FOV * (2 if oversampled else 1), y=FOV, z=THICKNESS),
        ),
        reconSpace=x.encodingSpaceType(
            matrixSize=x.matrixSizeType(x=n, y=ny, z=1),
            fieldOfView_mm=x.fieldOfViewMm(x=FOV, y=FOV, z=THICKNESS),
        ),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=lo, maximum=hi, center=c),
            slice=x.limitType(minimum=0, maximum=slices - 1, center=0),
        ),
        trajectory=x.trajectoryType(trajectory),
        parallelImaging=x.parallelImagingType(
            accelerationFactor=x.accelerationFactorType(
                kspace_encoding_step_1=accel, kspace_encoding_step_2=1
            )
        ) if accel > 1 else None,
    )  # fmt: skip
    meas = x.measurementInformationType(
        measurementID=measurement_id, patientPosition=x.patientPositionType("HFS"),
        seriesDescription="mrd test",
    )  # fmt: skip
    return x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        encoding=[enc],
        acquisitionSystemInformation=x.acquisitionSystemInformationType(
            receiverChannels=coils, systemFieldStrength_T=1.5
        ),
        measurementInformation=meas,
        subjectInformation=x.subjectInformationType(patientName="MRD^Phantom", patientID="P1"),
    )


@dataclass(frozen=True)
class Orientation:
    read: tuple[float, float, float] = (1.0, 0.0, 0.0)
    phase: tuple[float, float, float] = (0.0, 1.0, 0.0)

    @property
    def normal(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.cross(self.read, self.phase))  # type: ignore[return-value]


def oblique(deg: float) -> Orientation:
    a = math.radians(deg)
    return Orientation((math.cos(a), math.sin(a), 0.0), (-math.sin(a), math.cos(a), 0.0))


def acquisition(
    data: np.ndarray, ky: int, slice_: int = 0, flags: Iterable[int] = (),
    orient: Orientation = Orientation(), traj: np.ndarray | None = None,
) -> Any:  # fmt: skip
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64), traj)
    acq.idx.kspace_encode_step_1 = ky
    acq.idx.slice = slice_
    acq.sample_time_us = 5.0
    acq.position[:] = [float(v) * slice_ * THICKNESS for v in orient.normal]
    acq.read_dir[:], acq.phase_dir[:] = orient.read, orient.phase
    acq.slice_dir[:] = orient.normal
    for f in flags:
        acq.set_flag(f)
    return acq


def grappa_lines(ny: int, accel: int, acs: int) -> list[tuple[int, list[int]]]:
    """(ky, flags) of an accelerated scan with a central ACS block, in ky order."""
    lo, hi = ny // 2 - acs // 2, ny // 2 + acs // 2
    out = []
    for ky in range(ny):
        lattice, in_acs = ky % accel == 0, lo <= ky < hi
        if lattice and in_acs:
            out.append((ky, [ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING]))
        elif in_acs:
            out.append((ky, [ACQ_IS_PARALLEL_CALIBRATION]))
        elif lattice:
            out.append((ky, []))
    return out


def cartesian_slice(
    k: np.ndarray, lines: list[tuple[int, list[int]]], slice_: int = 0,
    orient: Orientation = Orientation(),
) -> list[Any]:  # fmt: skip
    """One slice's acquisitions from (coils, ny, nx) k-space; the last is LAST_IN_SLICE."""
    acqs = []
    for i, (ky, flags) in enumerate(lines):
        last = [ACQ_LAST_IN_SLICE] if i == len(lines) - 1 else []
        acqs.append(acquisition(k[:, ky], ky, slice_, [*flags, *last], orient))
    return acqs


def full_lines(ny: int) -> list[tuple[int, list[int]]]:
    return [(ky, []) for ky in range(ny)]


def radial_kspace(n: int, coils: int, spokes: int, readout: int) -> np.ndarray:
    """(coils, spokes, readout) exact samples on full-diameter spokes at angles pi j/spokes,
    in cycles/FOV of an n matrix, with the phantom's smooth coil maps."""
    order = 2
    ang = np.pi * np.arange(spokes) / spokes
    r = (np.arange(readout) - readout / 2) * n / readout
    kx, ky = np.outer(np.cos(ang), r), np.outer(np.sin(ang), r)
    coeffs = coil_coefficients(coils, order)
    out = np.zeros((coils, spokes, readout), dtype=np.complex128)
    for iy, my in enumerate(range(-order, order + 1)):
        for ix, mx in enumerate(range(-order, order + 1)):
            out += coeffs[:, iy, ix, None, None] * phantom_kspace(kx - mx, ky - my)[None]
    return out.astype(np.complex64)


@dataclass
class Collected:
    keep: bool = True  # False: count only (memory benchmarks)
    datasets: list[Dataset] = field(default_factory=list)
    count: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def on_image(self, ds: Dataset) -> None:
        with self.cond:
            self.count += 1
            if self.keep:
                self.datasets.append(ds)
            self.cond.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Dataset]:
        with self.cond:
            ok = self.cond.wait_for(lambda: self.count >= count, timeout)
        assert ok, f"got {self.count} images, expected {count}"
        return list(self.datasets)


@contextmanager
def running_server(
    send_back: bool = True, limits: MrdLimits | None = None, keep: bool = True,
    **settings: Any,
) -> Iterator[tuple[MrdServer, Collected]]:
    """An MrdServer on a free loopback port, in an event loop on a background thread;
    ``settings`` are further ``mrd:`` config keys."""
    got = Collected(keep)
    cfg = MrdConfig(bind="127.0.0.1", port=free_port(), **settings)
    server = MrdServer(cfg, got.on_image, send_back=send_back, limits=limits)
    with start_blocking_portal() as portal:
        future, _ = portal.start_task(server.serve)
        try:
            yield server, got
        finally:
            portal.call(server.stop)
            future.result(10)


def send_stream(
    port: int, hdr: Any, acqs: Iterable[Any], *, read_back: bool = True, extra: bytes = b""
) -> list[Any]:
    """Send header + acquisitions + CLOSE with ProtocolSerializer over TCP; read the images
    sent back with ProtocolDeserializer (concurrently, as a Gadgetron client does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        images: list[Any] = []
        reader = threading.Thread(target=_read_images, args=(sock, images), daemon=True)
        if read_back:
            reader.start()
        with sock.makefile("wb") as wfile:
            ser = ProtocolSerializer(wfile)
            ser.serialize(hdr)
            for acq in acqs:
                ser.serialize(acq)
            wfile.write(extra)
            ser.close()
        if read_back:
            reader.join(60)
            assert not reader.is_alive(), "no CLOSE came back"
        return images


def _read_images(sock: socket.socket, images: list[Any]) -> None:
    with sock.makefile("rb") as rfile:
        for item in ProtocolDeserializer(rfile).deserialize():
            images.append(item)


def send_raw(port: int, payload: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes, half-close, and return whatever comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close on us mid-send: that is the point
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def serialize(*objs: Any) -> bytes:
    import io

    buf = io.BytesIO()
    ser = ProtocolSerializer(buf)
    for o in objs:
        ser.serialize(o)
    return buf.getvalue()
