"""What one association costs pynetdicom before any handler work: the floor of the agent's
single-association ingest rate, and what each millisecond of handler adds to it.

    PYTHONPATH=. python benchmarks/profile_scp_floor.py [IMAGES]

A bare pynetdicom SCP in a child process (chunked receive into /dev/shm through the
agent's hashing incoming file, as the agent receives) answers dcmtk's storescu
(TCP_NODELAY=1) over one association, with a handler that returns at once, or holds the
GIL for 0.75 or 1.5 ms (1.3-1.7 ms: the agent's checked, journaled store on tmpfs, by
``profile_ingest.py``), interleaved with pynetdicom's storescp app (the ingest anchor).
Not a benchmark: nothing is asserted, and the figures depend on the machine's load.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_ingest import pynetdicom_receiver, send
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port, stop_process, wait_for_port

SERVER = """
import sys, time
from pathlib import Path
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage
from agent.receive.receiver import _stream_to
port, burn_s, folder = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
_stream_to(Path(folder), 1 << 30)

def store(event):
    end = time.perf_counter() + burn_s
    while time.perf_counter() < end:  # holds the GIL, as Python handler work does
        pass
    return 0x0000

ae = AE(ae_title="EDGE")
ae.maximum_pdu_size = 262144  # the agent's default dicom.max_pdu
ae.add_supported_context(CTImageStorage)
ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, store)])
"""


def one(files: list[Path], burn_s: float | None) -> float:
    """Seconds per image; ``burn_s`` None: pynetdicom's storescp app, the anchor."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        if burn_s is None:
            with pynetdicom_receiver(Path(folder)) as (port, _count):
                start = time.perf_counter()
                send(port, files, 1)
                return (time.perf_counter() - start) / len(files)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port), str(burn_s), folder],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        try:
            wait_for_port(port, 30, proc)
            start = time.perf_counter()
            send(port, files, 1)
            return (time.perf_counter() - start) / len(files)
        finally:
            stop_process(proc)


def main(images: int) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        files = write_ct_series(Path(tmp), images)
        cases = (None, 0.0, 0.00075, 0.0015)
        walls: dict[float | None, list[float]] = {c: [] for c in cases}
        for _ in range(3):  # rounds, interleaved
            for case in cases:
                walls[case].append(one(files, case))
    print(f"{images} CT images (526 KB) over 1 association, median of 3 rounds; load "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    anchor = statistics.median(walls[None])
    for burn_s in cases:
        wall = statistics.median(walls[burn_s])
        name = "pynetdicom storescp app" if burn_s is None else f"handler {burn_s * 1000:.2f} ms"
        print(f"  {name:24s} {1 / wall:5.0f} images/s, {wall * 1000:5.2f} ms/image, "
              f"{anchor / wall:.2f}x the app")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
