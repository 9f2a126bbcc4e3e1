"""Compile the Numba kernels at start-up, before the listener opens, so the first study
is not slow and ingest never competes with the compiler for the GIL. With NUMBA_CACHE_DIR
set (the systemd unit sets it) this loads from the cache in about a second. The MRI kernels
are warmed by the MRD listener, and only when it is configured."""

from __future__ import annotations

import logging
import time

import anyio
import anyio.to_thread

from agent.systemd_notify import notify
from kernels.device import Device, resolve_device

log = logging.getLogger(__name__)
EXTEND_S = 30.0  # each EXTEND_TIMEOUT_USEC asks for this much more start time


def _warm_all(qc_enabled: bool) -> None:
    from kernels import qc
    from kernels.ct import warmup as ct_warmup

    chosen = [("ct", ct_warmup)] + ([("qc", qc.warmup)] if qc_enabled else [])
    for name, warm in chosen:
        start = time.perf_counter()
        warm()
        log.info("kernels %s ready in %.1f s", name, time.perf_counter() - start)


async def warm_up_kernels(device: Device, qc_enabled: bool) -> None:
    """Compile (or load from the cache) every kernel. While it runs, systemd is told every
    few seconds to extend its start timeout, so a cold cache on a slow box cannot fail the
    start (``scanner-agent warmup`` in ``ExecStartPre`` fills the cache ahead)."""
    try:
        log.info("warming up kernels (compute device %s)", resolve_device(device))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_keep_systemd_waiting)
            await anyio.to_thread.run_sync(_warm_all, qc_enabled)
            tg.cancel_scope.cancel()
    except Exception:  # a kernel that cannot compile must not stop ingest or forwarding
        log.exception("kernel warm-up failed; the kernels will compile on first use")


async def _keep_systemd_waiting() -> None:
    notify("STATUS=compiling kernels before listening")
    while True:
        notify(f"EXTEND_TIMEOUT_USEC={int(EXTEND_S * 1e6)}")
        await anyio.sleep(EXTEND_S / 3)


def warm_all_now(qc_enabled: bool = True) -> None:
    """``scanner-agent warmup``: fill the kernel cache ahead of the first start."""
    _warm_all(qc_enabled)
