"""The agent's exceptions. Lower-layer errors are mapped to these at the boundary.

AgentError
├── ConfigError          the YAML config is invalid (carries every problem found)
├── JournalError         the journal cannot be opened or written
│   └── JournalFull      (agent.journal.space) a write failed for space: intake pauses
├── ModelError           a triage model cannot be loaded (manifest, hash, file, graph)
├── StartupError         the daemon cannot start: port in use, TLS files, state directory
│   └── StateDirInUse    another agent holds the state directory's lock
└── RejectedInstance     a received dataset must be refused; carries the DICOM status
    └── OutOfResources   the spool is above its watermark (0xA700)
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class JournalError(AgentError):
    pass


class ModelError(AgentError):
    """A model under ``models_dir`` is unusable; ``problems`` name each fault by file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class StartupError(AgentError):
    """What stops ``run`` before it serves; each problem names its YAML path and value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class StateDirInUse(StartupError):
    def __init__(self, path: str, pid: int | None) -> None:
        who = f"scanner-agent pid {pid}" if pid else "another scanner-agent"
        super().__init__([f"storage.path {path}: in use by {who}"])


class RejectedInstance(AgentError):
    """A C-STORE that must be answered with ``status`` (never 0x0000)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"0x{status:04X}: {reason}")


class OutOfResources(RejectedInstance):
    def __init__(self, reason: str) -> None:
        super().__init__(0xA700, reason)
