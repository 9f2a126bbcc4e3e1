"""David Clunie's dicom3tools as the referee for every result object the agent emits:
``dciodvfy`` checks one object against its IOD, ``dcentvfy`` checks that a set of files
agrees on each patient, study and series. Both print ``Error - ...`` lines (dciodvfy exits
0 even then), so the errors are read from the output."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

HINT = "dicom3tools is not installed: install it (Debian: apt-get install -y dicom3tools)"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name}: {HINT}")
    return path


def _errors(cmd: list[str]) -> list[str]:
    run = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith(("Error", "Abort"))]


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's errors for one file (warnings, such as the private scheme, are allowed)."""
    return _errors([_tool("dciodvfy"), str(path)])


def dcentvfy_errors(paths: Sequence[Path]) -> list[str]:
    """dcentvfy's errors across files: a result object and its source series."""
    return _errors([_tool("dcentvfy"), *map(str, paths)])


def assert_valid(result: Path, sources: Sequence[Path]) -> None:
    """Zero dciodvfy errors for ``result``, zero dcentvfy errors with its sources."""
    assert dciodvfy_errors(result) == [], f"dciodvfy {result.name}"
    assert dcentvfy_errors([result, *sources]) == [], f"dcentvfy {result.name} + sources"
