"""Where the C-STORE handler's time goes: the receiver in this process, dcmtk's storescu as
the sender, wall time per phase of ``Receiver._store`` (medians over the images).

    PYTHONPATH=. python benchmarks/profile_ingest.py [IMAGES] [ASSOCIATIONS] [--tmpfs]

The phases are wrapped, not sampled, so the figures add up to about the handler's total;
the rest of each image's time is pynetdicom's PDU path and the sender. Not a benchmark:
nothing is asserted, and the figures depend on the disk's fsync latency and the load.
Python's ``os.fsync`` calls are counted (files and folders apart); the journal's WAL
fsyncs happen in SQLite's C code, one per transaction (``synchronous=FULL``), so they are
the transaction count. ``--tmpfs``: the spool and journal in /dev/shm (flushes nearly free;
a stand-in for storage with fast flushes, not the durable default).
"""

from __future__ import annotations

import functools
import os
import stat
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agent.receive.receiver as receiver_module
from agent.config import DicomConfig
from agent.journal.database import Journal
from agent.journal.group_commit import GroupCommit
from agent.receive.flush import Flushes
from agent.receive.spool import Spool
from benchmarks.bench_ingest import send
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port

TIMES: dict[str, list[float]] = defaultdict(list)
FSYNCS: dict[str, int] = defaultdict(int)
_LOCK = threading.Lock()
_fsync = os.fsync


def counted_fsync(fd: int) -> None:
    kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
    with _LOCK:
        FSYNCS[kind] += 1
    _fsync(fd)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _LOCK:
                TIMES[name].append(time.perf_counter() - start)

    return wrapper


def device_flushes() -> int:
    """Cache flushes completed by the machine's block devices (/sys/block/*/stat, field 16;
    every process's, so a busy neighbour adds to it); 0 where the kernel does not say."""
    total = 0
    for stat_file in Path("/sys/block").glob("*/stat"):
        fields = stat_file.read_text().split()
        total += int(fields[15]) if len(fields) >= 17 else 0
    return total


def main(images: int, associations: int, on_tmpfs: bool = False) -> None:
    r = receiver_module
    os.fsync = counted_fsync
    r.read_checked = timed("walk + parse + check (read_checked)", r.read_checked)  # type: ignore[assignment]
    r.describe = timed("describe", r.describe)  # type: ignore[assignment]
    r.hash_dataset = timed("hash re-read (only if not hashed in flight)", r.hash_dataset)  # type: ignore[assignment]
    Flushes.place = timed("wait for the data fsync, rename", Flushes.place)  # type: ignore[method-assign]
    GroupCommit.record = timed("group commit: folder fsyncs + journal", GroupCommit.record)  # type: ignore[method-assign]
    Flushes.sync_folders = timed("  of which folder fsyncs (per batch)", Flushes.sync_folders)  # type: ignore[method-assign]
    Journal.record_instances = timed("  of which journal transaction (per batch)",
                                     Journal.record_instances)  # type: ignore[method-assign]  # fmt: skip
    r.Receiver._store = timed("handler total (_store)", r.Receiver._store)  # type: ignore[method-assign]
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir="/dev/shm" if on_tmpfs else None) as state,
    ):
        files = write_ct_series(Path(tmp) / "src", images)
        spool = Spool(Path(state) / "state", min_free_bytes=0)
        journal = Journal.open(spool.journal_path)
        rec = r.Receiver(DicomConfig(bind="127.0.0.1", port=free_port()), journal, spool,
                         lambda _item: None)  # fmt: skip
        rec.start()
        start, flushes = time.perf_counter(), device_flushes()
        send(rec.port, files, associations)
        wall, flushes = time.perf_counter() - start, device_flushes() - flushes
        rec.stop()
        journal.close()
    print(f"{images} images over {associations} association(s): {images / wall:.0f} images/s, "
          f"{wall / images * 1000:.2f} ms per image; {rec.commits.batches} journal "
          f"transactions, largest {rec.commits.largest}; state on "
          f"{'/dev/shm (tmpfs)' if on_tmpfs else 'the disk'}")  # fmt: skip
    print(f"  flushes per image: {FSYNCS['file'] / images:.2f} data fsyncs, "
          f"{FSYNCS['folder'] / images:.2f} folder fsyncs, "
          f"{rec.commits.batches / images:.2f} WAL commits (journal transactions); "
          f"{flushes / images:.2f} device cache flushes (whole machine)")  # fmt: skip
    for name, values in TIMES.items():
        print(f"  {name:46s} median {statistics.median(values) * 1000:6.2f} ms "
              f"(mean {statistics.mean(values) * 1000:.2f}, n={len(values)})")  # fmt: skip


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--tmpfs"]
    main(
        int(args[0]) if args else 200,
        int(args[1]) if len(args) > 1 else 1,
        on_tmpfs="--tmpfs" in sys.argv[1:],
    )
