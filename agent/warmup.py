"""Compile the Numba kernels at start-up, in a worker thread, so the first study is not
slow. With NUMBA_CACHE_DIR set (the systemd unit sets it) this loads from the cache."""

from __future__ import annotations

import logging
import time

import anyio
import anyio.to_thread

from kernels.device import Device, resolve_device

log = logging.getLogger(__name__)


def _warm_all() -> None:
    from kernels import qc
    from kernels.ct import warmup as ct_warmup
    from kernels.mri import warmup as mri_warmup

    for name, warm in (("qc", qc.warmup), ("ct", ct_warmup), ("mri", mri_warmup)):
        start = time.perf_counter()
        warm()
        log.info("kernels %s ready in %.1f s", name, time.perf_counter() - start)


async def warm_up_kernels(device: Device) -> None:
    try:
        log.info("warming up kernels (compute device %s)", resolve_device(device))
        await anyio.to_thread.run_sync(_warm_all)
    except Exception:  # a kernel that cannot compile must not stop ingest or forwarding
        log.exception("kernel warm-up failed; the kernels will compile on first use")
