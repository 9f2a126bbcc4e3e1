"""check-config finds what ``run`` would trip on, all in one pass, each with its YAML path;
``--probe`` reaches each peer (a real Orthanc and Mosquitto, and a closed port)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.broker import Mosquitto, make_tls
from tests.support.cli import scanner_agent
from tests.support.orthanc import Orthanc
from tests.support.peers import free_port


def write(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "agent.yaml"
    config.setdefault("storage", {"path": str(folder / "state")})
    path.write_text(yaml.safe_dump(config))
    return path


def test_missing_tls_files_fail_check_config(tmp_path: Path) -> None:
    tls = {"cert_file": str(tmp_path / "no.crt"), "key_file": str(tmp_path / "no.key")}
    pacs = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104,
            "tls": {**tls, "ca_file": str(tmp_path / "no-ca.pem")}}  # fmt: skip
    config = {"dicom": {"tls": tls}, "forward": {"destinations": [pacs]},
              "mqtt": {"url": "mqtts://127.0.0.1:8883", "tls": {"ca_file": str(tmp_path / "ca.pem")}}}  # fmt: skip
    result = scanner_agent("check-config", config=write(tmp_path, config))
    assert result.returncode == 1, result.stdout
    assert f"dicom.tls.cert_file {tmp_path / 'no.crt'}: cannot read: No such file" in result.stderr
    assert f"dicom.tls.key_file {tmp_path / 'no.key'}: cannot read" in result.stderr
    assert f"forward.destinations[0].tls.ca_file {tmp_path / 'no-ca.pem'}: cannot read" in result.stderr
    assert f"mqtt.tls.ca_file {tmp_path / 'ca.pem'}: cannot read" in result.stderr


def test_a_key_that_does_not_match_its_certificate_fails(tmp_path: Path) -> None:
    pems = make_tls(tmp_path / "pki")
    tls = {"cert_file": str(pems.server_cert), "key_file": str(pems.client_key)}
    result = scanner_agent("check-config", config=write(tmp_path, {"dicom": {"tls": tls}}))
    assert result.returncode == 1
    assert "dicom.tls.cert_file" in result.stderr
    assert "the key does not match the certificate" in result.stderr, result.stderr
    tls["key_file"] = str(pems.server_key)
    good = scanner_agent("check-config", config=write(tmp_path, {"dicom": {"tls": tls}}))
    assert good.returncode == 0, good.stderr


def test_a_protocol_naming_an_unknown_metric_fails(tmp_path: Path) -> None:
    protocols = tmp_path / "qc.yaml"
    protocols.write_text(
        "defaults:\n  CT:\n    ring_hu: {direction: high, warn: 8, fail: 9}\n"
        "    ringgg_hu: {direction: high, warn: 8, fail: 9}\n"
        "protocols:\n  - name: head\n    match: {modality: MR}\n"
        "    metrics:\n      ghosting: {direction: high, warn: 1, fail: 2, metric: ghost_ration}\n"
    )
    result = scanner_agent("check-config", config=write(tmp_path, {"qc": {"protocols": str(protocols)}}))
    assert result.returncode == 1
    assert "defaults.CT.ringgg_hu: unknown metric 'ringgg_hu'" in result.stderr, result.stderr
    assert "protocols[0].metrics.ghosting.metric: unknown metric 'ghost_ration'" in result.stderr
    assert "ring_hu:" not in result.stderr.replace("ringgg_hu", "")


def test_every_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    protocols = tmp_path / "qc.yaml"
    protocols.write_text("defaults:\n  CT:\n    nonsense: {direction: high, warn: 1, fail: 2}\n")
    config = {
        "storage": {"path": str(blocker / "sub")},
        "dicom": {"tls": {"cert_file": str(tmp_path / "a.crt"), "key_file": str(tmp_path / "a.key")}},
        "qc": {"protocols": str(protocols)},
        "triage": {"models_dir": str(tmp_path / "no-models")},
    }
    result = scanner_agent("check-config", config=write(tmp_path, config))
    assert result.returncode == 1
    for path in ("storage.path", "dicom.tls.cert_file", "dicom.tls.key_file", "qc.protocols",
                 "triage.models_dir"):  # fmt: skip
        assert f"  {path}" in result.stderr, (path, result.stderr)
    assert "5 error(s)" in result.stderr, result.stderr


@pytest.mark.integration
def test_probe_echoes_destinations_and_connects_the_broker(
    tmp_path: Path, orthanc: Orthanc, mosquitto: Mosquitto
) -> None:
    closed = {"name": "gone", "ae_title": "GONE", "host": "127.0.0.1", "port": free_port()}
    config = {
        "forward": {"destinations": [orthanc.destination("pacs"), closed]},
        "mqtt": {"url": mosquitto.url},
    }
    result = scanner_agent("check-config", "--probe", config=write(tmp_path, config))
    assert result.returncode == 1, result.stdout
    assert f"probe ok: forward.destinations pacs (PACS@127.0.0.1:{orthanc.dicom_port}): C-ECHO ok" in result.stdout
    assert f"probe FAILED: forward.destinations gone (GONE@127.0.0.1:{closed['port']})" in result.stderr
    assert f"probe ok: mqtt {mosquitto.url}: connected" in result.stdout, result.stderr
    config["forward"] = {"destinations": [orthanc.destination("pacs")]}
    config["mqtt"] = {"url": f"mqtt://127.0.0.1:{free_port()}"}
    broker_down = scanner_agent("check-config", "--probe", config=write(tmp_path, config))
    assert broker_down.returncode == 1
    assert "probe FAILED: mqtt mqtt://127.0.0.1:" in broker_down.stderr, broker_down.stderr
    mosquitto_ok = {**config, "mqtt": {"url": mosquitto.url}}
    all_ok = scanner_agent("check-config", "--probe", config=write(tmp_path, mosquitto_ok))
    assert all_ok.returncode == 0, all_ok.stderr
