"""``/metrics`` counts what was sent: a real agent subprocess, three CT slices over dcmtk's
storescu and one refused data set, then the Prometheus text parsed by prometheus-client's
own parser. The journal-backed verdict counters are also checked on a journal directly."""

from __future__ import annotations

import random
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import parse_config
from agent.receive.spool import dataset_offset
from tests.support.agent_proc import AgentProcess
from tests.support.alert_samples import seed_series
from tests.support.broker import Mosquitto
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port, storescu
from tests.support.scu import send_files

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as rsp:
        text = rsp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_was_sent(
    agent_factory: type[AgentProcess], tmp_path: Path, mosquitto: Mosquitto
) -> None:
    port = free_port()
    agent = agent_factory(
        metrics={"bind": "127.0.0.1", "port": port}, mqtt={"url": mosquitto.url}
    ).start()
    before = scrape(port)
    assert before[("scanner_agent_instances_received_total", ())] == 0
    storescu(agent.port, write_ct_series(tmp_path / "ct", 3, images_in_acquisition=3))
    # C-STORE success means the journal has the row: no waiting for the count
    after = scrape(port)
    assert after[("scanner_agent_instances_received_total", ())] == 3
    assert after[("scanner_agent_spool_free_bytes", ())] > 0
    garbage = tmp_path / "garbage.dcm"  # a valid file meta, then random bytes
    good = sorted((tmp_path / "ct").glob("*"))[0].read_bytes()
    garbage.write_bytes(good[: dataset_offset(good[:1024])] + random.Random(0).randbytes(4096))
    assert send_files(agent.port, [garbage]) == [0xC210]
    agent.wait_series_state("forwarded")
    done = scrape(port)
    completed = {k: v for k, v in done.items() if k[0] == "scanner_agent_series_completed_total"}
    assert sum(completed.values()) == 1, completed
    assert done[("scanner_agent_refusals_total", (("status", "0xC210"),))] == 1
    qc = {k: v for k, v in done.items() if k[0] == "scanner_agent_qc_results_total"}
    assert sum(qc.values()) == 1 and all(dict(k[1])["protocol"] for k in qc), qc
    assert done[("scanner_agent_verdict_latency_seconds_count", ())] == 1
    assert done[("scanner_agent_verdict_latency_seconds_bucket", (("le", "+Inf"),))] == 1
    assert done[("scanner_agent_delivery_queue_depth", (("destination", "local"),))] == 0
    assert done[("scanner_agent_series", (("state", "forwarded"),))] == 1
    assert ("scanner_agent_associations_active", ()) in done
    deadline = time.monotonic() + 60  # the broker link comes up on its own schedule
    while scrape(port)[("scanner_agent_mqtt_connected", ())] != 1:
        assert time.monotonic() < deadline, f"never connected to the broker:\n{agent.log()[-3000:]}"
        time.sleep(0.1)
    mosquitto.stop()
    while scrape(port)[("scanner_agent_mqtt_connected", ())] != 0:
        assert time.monotonic() < deadline + 60, "the link never noticed the broker was gone"
        time.sleep(0.1)


def test_metrics_are_off_unless_configured() -> None:
    assert parse_config("").metrics is None
    cfg = parse_config("metrics: {port: 9200}")
    assert cfg.metrics is not None and (cfg.metrics.bind, cfg.metrics.port) == ("127.0.0.1", 9200)


def _collected(tmp_path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Two judged series, one quarantined delivery and two refusals, through the collector."""
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.domain.delivery import Kind, Outcome
    from agent.journal import verdict_log
    from agent.journal.database import Journal
    from agent.journal.delivery_queue import DeliveryItem, DeliveryQueue
    from agent.monitor.metrics import JournalCollector, Live

    storage = tmp_path / "state"
    seed_series(storage, "1.2.1", "1.2.2")  # completed series, so every labelled family has samples
    journal = Journal.open(storage / "journal.sqlite")
    for uid, status, latency, score in [("1.2.1", "pass", 0.3, 0.05), ("1.2.2", "fail", 4.0, 0.99)]:
        with journal.transaction() as db:
            verdict_log.record(db, verdict_log.Judged(
                uid, "ct-head", status, latency, [("ich@0.3.0", "haemorrhage", score)]))  # fmt: skip
    item = DeliveryItem(1, "pacs", "x.dcm", "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1",
                        "1.2.2", "1.2", "routine")  # fmt: skip
    DeliveryQueue(journal).record([(item, Outcome(Kind.QUARANTINED, 0xC000, "refused"))])
    journal.close()
    cfg = parse_config(
        f"storage: {{path: {storage}}}\nforward: {{destinations: [{{kind: folder, name: pacs}}]}}"
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        JournalCollector(cfg, Live(lambda: False, lambda: 0, lambda: {0xA700: 2}, lambda: ["pacs"]))
    )
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    }


def test_verdict_counters_come_from_the_journal(tmp_path: Path) -> None:
    got = _collected(tmp_path)
    assert (
        got[("scanner_agent_qc_results_total", (("protocol", "ct-head"), ("status", "fail")))] == 1
    )
    assert (
        got[("scanner_agent_qc_results_total", (("protocol", "ct-head"), ("status", "pass")))] == 1
    )
    assert got[("scanner_agent_verdict_latency_seconds_bucket", (("le", "0.5"),))] == 1
    assert got[("scanner_agent_verdict_latency_seconds_bucket", (("le", "5.0"),))] == 2
    assert got[("scanner_agent_verdict_latency_seconds_sum", ())] == 4.3
    score = (("finding", "haemorrhage"), ("model", "ich@0.3.0"))
    assert got[("scanner_agent_triage_score_bucket", (*score[:1], ("le", "0.1"), *score[1:]))] == 1
    assert got[("scanner_agent_triage_score_count", score)] == 2
    assert got[("scanner_agent_quarantined_total", (("destination", "pacs"),))] == 1
    assert got[("scanner_agent_refusals_total", (("status", "0xA700"),))] == 2


def test_the_dashboard_and_the_readme_name_only_families_the_agent_serves(tmp_path: Path) -> None:
    import json
    import re

    served = {name for name, _ in _collected(tmp_path)}
    root = Path(__file__).resolve().parents[1]
    dashboard = json.loads((root / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"scanner_agent_[a-z_]+", e)}
    assert used and used <= served, f"the dashboard queries what is not served: {used - served}"
    readme = (root / "README.md").read_text()
    table = readme[readme.index("**Metrics.**") : readme.index("grafana-dashboard.json")]
    named = set(re.findall(r"`(scanner_agent_[a-z_]+)", table))
    histograms = {n for n in named if f"{n}_count" in served}
    assert len(named) >= 14 and (named - histograms) <= served, named - served - histograms
