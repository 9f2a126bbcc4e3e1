"""Raw MR data gathered per slice: the stateful, cheap part (event loop side).

:class:`MrdSession` reads the XML header, checks every acquisition against it, copies
readouts into per-slice k-space buffers whose sizes are capped by
:class:`~agent.recon.mrd_protocol.MrdLimits`, and hands out a :class:`SliceJob` per complete
slice (its ACQ_LAST_IN_SLICE readout), releasing the buffer. :mod:`agent.recon.mrd_recon`
turns a job into an image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.recon.mrd_protocol import MessageId, MrdLimits, MrdProtocolError
from kernels.mri import noise_covariance, whitening_matrix

C64 = npt.NDArray[np.complex64]
F32 = npt.NDArray[np.float32]

# ACQ_* flag numbers (ismrmrd.constants)
ACQ_LAST_IN_SLICE = 8
ACQ_IS_NOISE_MEASUREMENT = 19
ACQ_IS_PARALLEL_CALIBRATION = 20
ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING = 21
ACQ_LAST_IN_MEASUREMENT = 25
_SKIPPED_FLAGS = (23, 24, 26, 27, 28, 29, 30, 31)  # navigators, phase correction, dummies...
_GOLDEN = math.pi * (math.sqrt(5) - 1) / 2  # 111.25 degrees


def _flag(acq: Any, bit: int) -> bool:
    return bool(int(acq.flags) & (1 << (bit - 1)))


class MrdHeaderMismatch(MrdProtocolError):
    """An acquisition contradicts the XML header (matrix, channels, limits)."""


@dataclass(frozen=True)
class Encoding:
    """What reconstruction needs from the XML header's first encoding."""

    matrix: tuple[int, int, int]  # encoded x (with oversampling), y, z
    recon_matrix: tuple[int, int, int]
    fov: tuple[float, float, float]  # encoded, mm
    recon_fov: tuple[float, float, float]
    ky: tuple[int, int, int]  # encoding limits (min, max, center) of kspace_encoding_step_1
    trajectory: str
    acceleration: int
    channels: int | None
    counts: tuple[int | None, int | None, int | None]  # slices, contrasts, repetitions

    @property
    def readout_oversampled(self) -> bool:
        return (
            self.matrix[0] == 2 * self.recon_matrix[0]
            and abs(self.fov[0] - 2 * self.recon_fov[0]) <= 0.01 * self.fov[0]
        )

    @property
    def partial_fourier(self) -> bool:
        lo, hi, c = self.ky
        low, high = c - lo, hi - c
        return min(low, high) < 0.9 * max(low, high) - 1

    @property
    def images_expected(self) -> int | None:
        s, c, r = self.counts
        return None if s is None else s * (c or 1) * (r or 1)


def _count(limit: Any) -> int | None:
    return None if limit is None else int(limit.maximum) + 1


def encoding_from_header(header: Any) -> Encoding:
    """Read the first encoding; MrdHeaderMismatch when the header is unusable."""
    if not header.encoding:
        raise MrdHeaderMismatch("XML header has no encoding")
    enc = header.encoding[0]
    m, r = enc.encodedSpace.matrixSize, enc.reconSpace.matrixSize
    f, rf = enc.encodedSpace.fieldOfView_mm, enc.reconSpace.fieldOfView_mm
    lim = enc.encodingLimits
    ny = int(m.y)
    ky = lim.kspace_encoding_step_1
    ky_t = (
        (0, ny - 1, ny // 2) if ky is None else (int(ky.minimum), int(ky.maximum), int(ky.center))
    )
    pi = enc.parallelImaging
    accel = int(pi.accelerationFactor.kspace_encoding_step_1) if pi is not None else 1
    system = header.acquisitionSystemInformation
    channels = (
        None if system is None or system.receiverChannels is None else system.receiverChannels
    )
    out = Encoding(
        matrix=(int(m.x), ny, int(m.z)),
        recon_matrix=(int(r.x), int(r.y), int(r.z)),
        fov=(float(f.x), float(f.y), float(f.z)),
        recon_fov=(float(rf.x), float(rf.y), float(rf.z)),
        ky=ky_t,
        trajectory=str(enc.trajectory.value),
        acceleration=max(accel, 1),
        channels=None if channels is None else int(channels),
        counts=(_count(lim.slice), _count(lim.contrast), _count(lim.repetition)),
    )
    _check_encoding(out)
    return out


def _check_encoding(e: Encoding) -> None:
    if min(e.matrix[:2]) < 2 or min(e.recon_matrix[:2]) < 1 or e.matrix[2] != 1:
        raise MrdHeaderMismatch(f"unsupported matrix {e.matrix} (2D, at least 2x2)")
    if e.trajectory not in ("cartesian", "radial", "goldenangle"):
        raise MrdHeaderMismatch(f"trajectory {e.trajectory!r} is not supported")
    lo, hi, c = e.ky
    ny = e.matrix[1]
    rows_fit = lo + ny // 2 - c >= 0 and hi + ny // 2 - c < ny
    if e.trajectory == "cartesian" and not (0 <= lo <= c <= hi and rows_fit):
        raise MrdHeaderMismatch(f"kspace_encoding_step_1 limits {e.ky} contradict the matrix")
    if min(e.fov) <= 0 or min(e.recon_fov) <= 0:
        raise MrdHeaderMismatch("field of view must be positive")


@dataclass(frozen=True)
class Geometry:
    """Slice geometry from an acquisition header (patient coordinates, mm)."""

    position: tuple[float, float, float]
    read_dir: tuple[float, float, float]
    phase_dir: tuple[float, float, float]
    slice_dir: tuple[float, float, float]
    table_position: tuple[float, float, float]
    measurement_uid: int
    acquisition_time_stamp: int
    defaulted: bool = False  # the data had no orientation: axial was assumed

    @staticmethod
    def of(acq: Any) -> Geometry:
        def v(x: Any) -> tuple[float, float, float]:
            return (float(x[0]), float(x[1]), float(x[2]))

        read, phase, normal = v(acq.read_dir), v(acq.phase_dir), v(acq.slice_dir)
        # ISMRMRD's own generators write all-zero direction vectors: no orientation at all
        defaulted = not (_norm(read) > 0 and _norm(phase) > 0)
        if defaulted:
            read, phase, normal = AXIAL
        return Geometry(
            v(acq.position), read, phase, normal, v(acq.patient_table_position),
            int(acq.measurement_uid), int(acq.acquisition_time_stamp), defaulted,
        )  # fmt: skip


Vec3 = tuple[float, float, float]
AXIAL: tuple[Vec3, Vec3, Vec3] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _norm(v: Vec3) -> float:
    return math.sqrt(sum(c * c for c in v)) if all(map(math.isfinite, v)) else 0.0


SliceKey = tuple[int, int, int, int, int]  # slice, contrast, repetition, phase, set


@dataclass(frozen=True)
class SliceJob:
    """A complete slice, owning its data; the session no longer holds it."""

    key: SliceKey
    encoding: Encoding
    geometry: Geometry
    whitening: npt.NDArray[np.complex128] | None
    kspace: C64  # cartesian (coils, ny, nx); radial (coils, readouts, samples)
    spokes: npt.NDArray[np.float64] | None  # radial: (readouts, samples, 2) cycles/FOV or None
    last_readout_at: float  # time.perf_counter() when the slice's last readout arrived


@dataclass
class _Buffer:
    key: SliceKey
    nbytes: int
    geometry: Geometry | None = None
    kspace: C64 | None = None  # cartesian: summed readouts
    counts: npt.NDArray[np.int32] | None = None  # cartesian: readouts per line
    readouts: list[C64] = field(default_factory=list)  # radial
    coords: list[npt.NDArray[np.float64]] = field(default_factory=list)


class MrdSession:
    """The state of one MRD stream: header, noise, open slices. Not thread-safe; feed it
    from one task and hand the jobs it returns to :func:`reconstruct`."""

    def __init__(self, limits: MrdLimits | None = None) -> None:
        self.limits = limits or MrdLimits()
        self.header: Any = None
        self.xml = b""
        self.encoding: Encoding | None = None
        self.whitening: npt.NDArray[np.complex128] | None = None
        self._noise: list[C64] = []
        self._noise_dwell = 0.0
        self._open: dict[SliceKey, _Buffer] = {}
        self._open_bytes = 0
        self.acquisitions = 0
        self.skipped = 0

    @property
    def open_bytes(self) -> int:
        return self._open_bytes + sum(n.nbytes for n in self._noise)

    def set_header(self, header: Any, xml: bytes) -> None:
        if self.encoding is not None:
            raise MrdProtocolError("a second XML header in one stream")
        self.encoding = encoding_from_header(header)
        self.header, self.xml = header, xml

    def add(self, acq: Any) -> SliceJob | None:
        """Take one acquisition; return a job when it completes a slice."""
        enc = self.encoding
        if enc is None:
            raise MrdProtocolError("acquisition before the XML header")
        self.acquisitions += 1
        self._check_channels(acq, enc)
        if _flag(acq, ACQ_IS_NOISE_MEASUREMENT):
            self._add_noise(acq)
            return None
        if any(_flag(acq, f) for f in _SKIPPED_FLAGS):
            self.skipped += 1
            return None
        if self._noise:
            self._whiten_from_noise(acq)
        buf = self._buffer(acq, enc)
        if enc.trajectory == "cartesian":
            self._add_cartesian(buf, acq, enc)
        else:
            self._add_radial(buf, acq, enc)
        if _flag(acq, ACQ_LAST_IN_SLICE):
            return self._complete(buf, enc)
        return None

    def discard(self) -> int:
        """Drop every incomplete slice (end of stream); return how many there were."""
        n = len(self._open)
        self._open.clear()
        self._open_bytes = 0
        self._noise.clear()
        return n

    def _check_channels(self, acq: Any, enc: Encoding) -> None:
        nc = int(acq.active_channels)
        if nc < 1:
            raise MrdHeaderMismatch("acquisition with no active channels")
        if enc.channels is not None and nc != enc.channels:
            raise MrdHeaderMismatch(
                f"acquisition has {nc} channels, header says receiverChannels={enc.channels}"
            )
        if self.whitening is not None and self.whitening.shape[0] != nc:
            raise MrdHeaderMismatch(
                f"{nc} channels after a {self.whitening.shape[0]}-coil noise scan"
            )

    def _add_noise(self, acq: Any) -> None:
        data = np.array(acq.data, dtype=np.complex64)
        if self._noise and data.shape[0] != self._noise[0].shape[0]:
            raise MrdHeaderMismatch("noise scans with different channel counts")
        if self.open_bytes + data.nbytes > self.limits.max_slice_bytes:
            raise MrdProtocolError("noise scans exceed the per-slice buffer limit")
        self._noise.append(data)
        self._noise_dwell = float(acq.sample_time_us)

    def _whiten_from_noise(self, acq: Any) -> None:
        noise = np.concatenate(self._noise, axis=1)
        self._noise.clear()
        dwell = float(acq.sample_time_us)
        scale = dwell / self._noise_dwell if dwell > 0 and self._noise_dwell > 0 else 1.0
        try:
            self.whitening = whitening_matrix(noise_covariance(noise), scale)
        except ValueError as exc:
            raise MrdProtocolError(f"noise scan unusable: {exc}") from None

    def _buffer(self, acq: Any, enc: Encoding) -> _Buffer:
        idx = acq.idx
        key = (int(idx.slice), int(idx.contrast), int(idx.repetition), int(idx.phase), int(idx.set))
        slices, contrasts, reps = enc.counts
        for name, value, count in (("slice", key[0], slices), ("contrast", key[1], contrasts),
                                   ("repetition", key[2], reps)):  # fmt: skip
            if count is not None and value >= count:
                raise MrdHeaderMismatch(f"{name} {value} outside the encoding limits (< {count})")
        buf = self._open.get(key)
        if buf is None:
            nbytes = self._slice_bytes(acq, enc)
            buf = self._open[key] = _Buffer(key, nbytes)
            self._open_bytes += nbytes if enc.trajectory == "cartesian" else 0
        return buf

    def _slice_bytes(self, acq: Any, enc: Encoding) -> int:
        nc = int(acq.active_channels)
        nbytes = nc * enc.matrix[1] * enc.matrix[0] * 8
        if enc.trajectory != "cartesian":
            nbytes = 0  # grows per readout, checked there
        if nbytes > self.limits.max_slice_bytes:
            raise MrdProtocolError(
                f"slice buffer of {nbytes} bytes exceeds the limit of {self.limits.max_slice_bytes}"
            )
        if self.open_bytes + nbytes > self.limits.max_open_bytes:
            raise MrdProtocolError(
                f"{len(self._open) + 1} open slices need more than {self.limits.max_open_bytes} bytes"
            )
        return nbytes

    def _add_cartesian(self, buf: _Buffer, acq: Any, enc: Encoding) -> None:
        ns, ny, nx = int(acq.number_of_samples), enc.matrix[1], enc.matrix[0]
        if ns != nx:
            raise MrdHeaderMismatch(f"acquisition has {ns} samples, encoded matrix x is {nx}")
        ky = int(acq.idx.kspace_encode_step_1)
        lo, hi, center = enc.ky
        row = ky + ny // 2 - center
        if not lo <= ky <= hi or not 0 <= row < ny:
            raise MrdHeaderMismatch(
                f"kspace_encode_step_1 {ky} outside the encoding limits {lo}..{hi}"
            )
        if buf.kspace is None:
            buf.kspace = np.zeros((int(acq.active_channels), ny, nx), dtype=np.complex64)
            buf.counts = np.zeros(ny, dtype=np.int32)
        elif buf.kspace.shape[0] != acq.active_channels:
            raise MrdHeaderMismatch("channel count changed within a slice")
        assert buf.counts is not None
        buf.kspace[:, row] += acq.data
        buf.counts[row] += 1
        if ky == center or buf.geometry is None:
            buf.geometry = Geometry.of(acq)

    def _add_radial(self, buf: _Buffer, acq: Any, enc: Encoding) -> None:
        if int(acq.number_of_samples) != enc.matrix[0]:
            raise MrdHeaderMismatch(
                f"acquisition has {acq.number_of_samples} samples, encoded matrix x is {enc.matrix[0]}"
            )
        data = np.array(acq.data, dtype=np.complex64)
        if buf.readouts and data.shape != buf.readouts[0].shape:
            raise MrdHeaderMismatch("radial readouts of different lengths within a slice")
        self._open_bytes += data.nbytes
        buf.nbytes += data.nbytes
        if buf.nbytes > self.limits.max_slice_bytes or self.open_bytes > self.limits.max_open_bytes:
            raise MrdProtocolError(f"radial slice {buf.key[0]} exceeds the buffer limits")
        buf.readouts.append(data)
        buf.coords.append(_spoke(acq, enc))
        if buf.geometry is None:
            buf.geometry = Geometry.of(acq)

    def _complete(self, buf: _Buffer, enc: Encoding) -> SliceJob:
        del self._open[buf.key]
        self._open_bytes -= buf.nbytes
        assert buf.geometry is not None
        if buf.kspace is not None and buf.counts is not None:
            k = buf.kspace
            many = buf.counts > 1
            if many.any():
                k[:, many] /= buf.counts[many][None, :, None]
            spokes = None
        else:
            k = np.stack(buf.readouts, axis=1)
            spokes = np.stack(buf.coords)
        return SliceJob(buf.key, enc, buf.geometry, self.whitening, k, spokes, time.perf_counter())


def _spoke(acq: Any, enc: Encoding) -> npt.NDArray[np.float64]:
    """(samples, 2) k-space coordinates of a radial readout in cycles/FOV of the recon matrix.

    A trajectory in the acquisition (trajectory_dimensions >= 2) is taken in units of the
    matrix, i.e. within [-0.5, 0.5) (Gadgetron's convention); without one, the spoke angle
    comes from kspace_encode_step_1: pi * i / spokes (radial) or i * 111.25 deg (golden)."""
    ns, n = int(acq.number_of_samples), enc.recon_matrix[0]
    if int(acq.trajectory_dimensions) >= 2:
        traj = np.asarray(acq.traj, dtype=np.float64)[:, :2]
        if np.abs(traj).max() > 0.5 + 1e-3:
            raise MrdHeaderMismatch("radial trajectory outside [-0.5, 0.5] (units of the matrix)")
        return traj * n
    i = int(acq.idx.kspace_encode_step_1)
    spokes = enc.ky[1] + 1
    ang = i * _GOLDEN if enc.trajectory == "goldenangle" else math.pi * i / spokes
    r = (np.arange(ns) - ns / 2) * n / ns
    return np.stack([r * math.cos(ang), r * math.sin(ang)], axis=1)


def feed(session: MrdSession, msg: Any) -> SliceJob | None:
    """Apply one protocol message to the session (HEADER, ACQUISITION; others ignored)."""
    if msg.id == MessageId.HEADER:
        session.set_header(msg.value, msg.raw)
    elif msg.id == MessageId.ACQUISITION:
        return session.add(msg.value)
    return None


def no_image_reason(
    session: MrdSession, *, refused: str | None, failed: int, first_error: str | None,
    dropped: int,
) -> str:  # fmt: skip
    """Why a stream that carried data yielded no image, for the system alert."""
    if refused:
        return f"the stream was refused: {refused}"
    if failed:
        return f"{failed} slice(s) could not be reconstructed; first: {first_error}"
    if session.encoding is None:
        return "the stream ended before its XML header"
    if session.acquisitions == session.skipped:
        return f"the stream held no imaging readouts ({session.acquisitions} acquisitions)"
    return (
        f"{session.acquisitions} acquisitions but no slice was complete (no readout flagged "
        f"ACQ_LAST_IN_SLICE); {dropped} incomplete slice(s) dropped"
    )
