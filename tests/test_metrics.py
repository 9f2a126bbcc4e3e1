"""``/metrics`` counts what was sent: a real agent subprocess, three CT slices over dcmtk's
storescu, then the Prometheus text parsed by prometheus-client's own parser."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import parse_config
from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port, storescu

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
    agent.wait_series_state("forwarded")
    done = scrape(port)
    completed = {k: v for k, v in done.items() if k[0] == "scanner_agent_series_completed_total"}
    assert sum(completed.values()) == 1, completed
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
