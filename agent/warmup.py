"""Compile the Numba kernels at start-up, before the listener opens, so the first study
is not slow and ingest never competes with the compiler for the GIL. With NUMBA_CACHE_DIR
set (the systemd unit sets it) this loads from the cache in about a second. The MRI kernels
are warmed by the MRD listener, and only when it is configured."""

from __future__ import annotations

import logging
import time

import anyio
import anyio.to_thread

from kernels.device import Device, resolve_device

log = logging.getLogger(__name__)


def _warm_all(qc_enabled: bool) -> None:
    from kernels import qc
    from kernels.ct import warmup as ct_warmup

    chosen = [("ct", ct_warmup)] + ([("qc", qc.warmup)] if qc_enabled else [])
    for name, warm in chosen:
        start = time.perf_counter()
        warm()
        log.info("kernels %s ready in %.1f s", name, time.perf_counter() - start)


async def warm_up_kernels(device: Device, qc_enabled: bool) -> None:
    try:
        log.info("warming up kernels (compute device %s)", resolve_device(device))
        await anyio.to_thread.run_sync(_warm_all, qc_enabled)
    except Exception:  # a kernel that cannot compile must not stop ingest or forwarding
        log.exception("kernel warm-up failed; the kernels will compile on first use")
