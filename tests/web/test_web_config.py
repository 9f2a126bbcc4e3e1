"""The ``web:`` section: validated with YAML paths, its TLS files checked by check-config,
and a taken port stopping ``run`` in one line that names ``web.port``."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

from agent.config import load_config
from tests.support.cli import scanner_agent
from tests.support.peers import free_port


def write(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "agent.yaml"
    config.setdefault("storage", {"path": str(folder / "state")})
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_embedded_default_serves_the_console_on_loopback() -> None:
    web = load_config().web
    assert web is not None and (web.bind, web.port, web.tls) == ("127.0.0.1", 8080, None)


def test_bad_web_keys_are_errors_with_their_path(tmp_path: Path) -> None:
    config = {"web": {"port": 70000, "bnd": "0.0.0.0", "session_hours": 0}}
    result = scanner_agent("check-config", config=write(tmp_path, config))
    assert result.returncode == 1
    assert "web.port: must be between 1 and 65535" in result.stderr, result.stderr
    assert "web.bnd: unknown key" in result.stderr, result.stderr
    assert "web.session_hours" in result.stderr, result.stderr


def test_missing_web_tls_files_fail_check_config(tmp_path: Path) -> None:
    tls = {"cert_file": str(tmp_path / "no.crt"), "key_file": str(tmp_path / "no.key")}
    result = scanner_agent("check-config", config=write(tmp_path, {"web": {"tls": tls}}))
    assert result.returncode == 1, result.stdout
    assert f"web.tls.cert_file {tmp_path / 'no.crt'}: cannot read: No such file" in result.stderr


def test_run_stops_in_one_line_when_the_web_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = {"web": {"port": port}, "dicom": {"bind": "127.0.0.1", "port": free_port()},
                  "triage": {"enabled": False}}  # fmt: skip
        result = scanner_agent("run", config=write(tmp_path, config), timeout=120)
    assert result.returncode == 1
    assert f"web.port {port}: cannot listen on 127.0.0.1: address in use" in result.stderr, (
        result.stderr
    )
