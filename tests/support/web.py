"""The web console in tests: an agent subprocess with ``web:`` on a free port, its accounts
made with the real ``scanner-agent web-user`` verb, and logged-in HTTP clients (httpx)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.agent_proc import AgentProcess
from tests.support.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"tech": "tech-password-1", "rad": "rad-password-1", "admin": "admin-password-1"}
ROLES = {"tech": "technologist", "rad": "radiologist", "admin": "admin"}


def web_overrides(**more: Any) -> dict[str, Any]:
    """AgentProcess overrides: the console on a free port, QC on (so a ring series is held)."""
    return {"web": {"bind": "127.0.0.1", "port": free_port()}, "qc": {"enabled": True}, **more}


def web_url(agent: AgentProcess) -> str:
    import yaml

    port = yaml.safe_load(agent.config_path.read_text())["web"]["port"]
    return f"http://127.0.0.1:{port}"


def web_user(agent: AgentProcess, action: str, name: str, role: str | None = None,
             password: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``scanner-agent web-user ACTION NAME [--role R --password-stdin] -c CONFIG``."""
    cmd = [sys.executable, "-m", "agent", "web-user", action, name, "-c", str(agent.config_path)]
    if role:
        cmd += ["--role", role, "--password-stdin"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        cmd, input=(password or "") + "\n", capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=60, check=False,
    )  # fmt: skip


def add_users(agent: AgentProcess) -> None:
    for name, role in ROLES.items():
        done = web_user(agent, "add", name, role, PASSWORDS[name])
        assert done.returncode == 0, done.stderr


def client(agent: AgentProcess) -> httpx.Client:
    return httpx.Client(base_url=web_url(agent), timeout=30, follow_redirects=False)


def login(agent: AgentProcess, name: str) -> tuple[httpx.Client, str]:
    """A client holding ``name``'s session, and the session's CSRF token."""
    http = client(agent)
    answer = http.post("/login", data={"username": name, "password": PASSWORDS[name]})
    assert answer.status_code == 303, answer.text
    me = http.get("/api/me")
    assert me.status_code == 200, me.text
    return http, str(me.json()["csrf"])


def wait_for_series(
    http: httpx.Client, predicate: Any, timeout: float = 90
) -> list[dict[str, Any]]:
    """Poll ``GET /api/series`` until ``predicate(rows)``; fail with the last rows."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = http.get("/api/series").json()
        if predicate(rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"GET /api/series never satisfied the condition; last: {rows}")
