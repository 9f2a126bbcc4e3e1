"""Where the C-STORE handler's time goes: the receiver in this process, dcmtk's storescu as
the sender, wall time per phase of ``Receiver._store`` (medians over the images).

    PYTHONPATH=. python benchmarks/profile_ingest.py [IMAGES] [ASSOCIATIONS]

The phases are wrapped, not sampled, so the figures add up to about the handler's total;
the rest of each image's time is pynetdicom's PDU path and the sender. Not a benchmark:
nothing is asserted, and the figures depend on the disk's fsync latency and the load.
"""

from __future__ import annotations

import functools
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
from agent.receive.spool import Spool
from benchmarks.bench_ingest import send
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port

TIMES: dict[str, list[float]] = defaultdict(list)
_LOCK = threading.Lock()


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


def main(images: int, associations: int) -> None:
    r = receiver_module
    r.read_checked = timed("walk + parse + check (read_checked)", r.read_checked)  # type: ignore[assignment]
    r.describe = timed("describe", r.describe)  # type: ignore[assignment]
    r.hash_dataset = timed("hash re-read (only if not hashed in flight)", r.hash_dataset)  # type: ignore[assignment]
    Spool.commit = timed("wait for fsync, rename, folder fsync", Spool.commit)  # type: ignore[method-assign]
    GroupCommit.record = timed("journal commit (group)", GroupCommit.record)  # type: ignore[method-assign]
    r.Receiver._store = timed("handler total (_store)", r.Receiver._store)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        files = write_ct_series(Path(tmp) / "src", images)
        spool = Spool(Path(tmp) / "state", min_free_bytes=0)
        journal = Journal.open(spool.journal_path)
        rec = r.Receiver(DicomConfig(bind="127.0.0.1", port=free_port()), journal, spool,
                         lambda _item: None)  # fmt: skip
        rec.start()
        start = time.perf_counter()
        send(rec.port, files, associations)
        wall = time.perf_counter() - start
        rec.stop()
        journal.close()
    print(f"{images} images over {associations} association(s): {images / wall:.0f} images/s, "
          f"{wall / images * 1000:.2f} ms per image; {rec.commits.batches} journal "
          f"transactions, largest {rec.commits.largest}")  # fmt: skip
    for name, values in TIMES.items():
        print(f"  {name:46s} median {statistics.median(values) * 1000:6.2f} ms "
              f"(mean {statistics.mean(values) * 1000:.2f}, n={len(values)})")  # fmt: skip


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 200, int(sys.argv[2]) if len(sys.argv) > 2 else 1
    )
