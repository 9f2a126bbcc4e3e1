from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.config import load_config, parse_config
from agent.errors import ConfigError
from tests.support.cli import scanner_agent

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def test_embedded_default_is_valid_and_self_contained() -> None:
    cfg = load_config()
    assert cfg.mqtt is None, "the default must work without a broker"
    assert [d.kind for d in cfg.forward.destinations] == ["folder"]
    assert cfg.storage.path is None
    assert cfg.dicom.bind == "127.0.0.1"


def test_default_storage_follows_systemd_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/scanner-agent")
    assert load_config().storage_path == Path("/var/lib/scanner-agent")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", "/tmp/xdg")
    assert load_config().storage_path == Path("/tmp/xdg/scanner-agent")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dicom: {port: 70000}", "dicom.port: must be between 1 and 65535"),
        ("dicom: {prot: 104}", "dicom.prot: unknown key"),
        ("colour: blue", "colour: unknown key"),
        ("dicom: {ae_title: 'MUCH_TOO_LONG_AE_TITLE'}", "dicom.ae_title: must be 1 to 16"),
        ("agent_id: 'ct 1'", "agent_id: must be 1 to 64"),
        (
            "forward: {destinations: [{name: p, host: h, port: 1}]}",
            "forward.destinations[0].ae_title: required",
        ),
        (
            "forward: {destinations: [{kind: ftp, name: p}]}",
            "forward.destinations[0]: kind must be",
        ),
        ("storage: {min_free_bytes: lots}", "storage.min_free_bytes:"),
        ("series: {idle_timeout_s: {CT: 5}}", "series.idle_timeout_s: must have a 'default' entry"),
        ("mqtt: {url: 'http://x'}", "mqtt.url:"),
        ("dicom: [1", "<yaml>: line 1"),
        ("- a list", "<root>: must be a mapping"),
    ],
)
def test_errors_name_the_yaml_path(text: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_every_error_is_reported_at_once() -> None:
    found = problems("dicom: {port: 0, bogus: 1}\nagent_id: '!'")
    assert len(found) == 3


def test_example_config_is_valid() -> None:
    for path in (ROOT / "config").glob("*.yaml"):
        if path.name.startswith("qc-"):
            continue
        load_config(path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return scanner_agent(*args, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  port: 99999\n  colour: red\n")
    result = run_cli("check-config", "-c", str(bad))
    assert result.returncode == 1
    assert "dicom.port: must be between 1 and 65535" in result.stderr
    assert "dicom.colour: unknown key" in result.stderr
    ok = run_cli("check-config")
    assert ok.returncode == 0, ok.stderr
    missing = run_cli("check-config", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
