"""One way to run the ``scanner-agent`` command line from the tests: this checkout's code
(``PYTHONPATH`` and the working folder are the repository root), text output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def scanner_agent(
    *args: str, config: Path | str | None = None, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``scanner-agent ARGS [-c CONFIG]`` as a subprocess; ``check`` raises on a non-zero exit."""
    cmd = [sys.executable, "-m", "agent", *args, *(["-c", str(config)] if config else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout, check=check
    )
