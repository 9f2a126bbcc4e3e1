"""Seconds from the last image received to the verdict in the feed: a 300-slice head CT
(complete by its declared count, so no grace period) through a real agent with QC and
triage on. A script, not a pytest-benchmark: it has no anchor.

    NUMBA_CACHE_DIR=/root/.numba_cache python benchmarks/verdict_latency.py /tmp/verdict-run
"""

import json
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import storescu

root = Path(sys.argv[1])
files = write_ct_series(root / "s", 300, images_in_acquisition=300, header=series_header("HEAD 5mm", "HEAD"))
agent = AgentProcess(root / "agent", qc={"enabled": True}, triage={"enabled": True}).start()
try:
    storescu(agent.port, files)
    uid = agent.query("SELECT series_uid FROM series")[0][0]
    feed = agent.storage / "feed.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in feed.read_text().splitlines():
            d = json.loads(line)
            if d["topic"] == f"series/{uid}":
                last = agent.query("SELECT last_received_at FROM series WHERE series_uid = ?", uid)[0][0]
                at = datetime.fromisoformat(d["at"].replace("Z", "+00:00")).timestamp()
                print(f"verdict {at - last:.2f} s after the last image")
                raise SystemExit(0)
        time.sleep(0.05)
finally:
    agent.stop()
