"""``scanner-agent health`` against a real agent subprocess: running and serving is 0, the
same agent after kill -9 is 1 (its lock file is still there; the lock is not)."""

from __future__ import annotations

import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.cli import scanner_agent

pytestmark = pytest.mark.integration


def test_health_follows_the_agent(agent_factory: type[AgentProcess]) -> None:
    agent = agent_factory()
    before = scanner_agent("health", config=agent.config_path)
    assert before.returncode == 1 and "not running" in before.stderr, before.stderr
    agent.start()
    assert agent.proc is not None
    up = scanner_agent("health", config=agent.config_path)
    assert up.returncode == 0, up.stderr
    lines = up.stdout.strip().splitlines()
    assert len(lines) == 1 and f"pid {agent.proc.pid}" in lines[0] and "C-ECHO ok" in lines[0]
    agent.kill9()
    assert (agent.storage / "agent.lock").exists()
    down = scanner_agent("health", config=agent.config_path)
    assert down.returncode == 1, down.stdout
    assert "not running" in down.stderr and f"pid {agent.proc.pid}" in down.stderr, down.stderr


def test_health_fails_when_the_lock_is_held_but_nothing_serves(
    agent_factory: type[AgentProcess],
) -> None:
    from agent.journal.state_lock import StateLock

    agent = agent_factory()  # configured, never started: this test holds its lock instead
    lock = StateLock.acquire(agent.storage)
    try:
        result = scanner_agent("health", config=agent.config_path)
    finally:
        lock.release()
    assert result.returncode == 1
    assert "does not serve" in result.stderr and "cannot connect" in result.stderr, result.stderr
