"""The package works wherever it is installed: a wheel built from this checkout, installed into
a fresh virtual environment, runs check-config, inspect and demo from a folder outside the
checkout. The environment sees the system's site-packages so that dependencies need not be
downloaded; the agent itself must come from the wheel, and the test proves it does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parents[1]
# what the build needs; copying it keeps build/ and egg-info churn out of the checkout
SOURCES = ("pyproject.toml", "README.md", "agent", "kernels", "config", "models")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``bin`` folder of a venv holding scanner-agent installed from a fresh wheel."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():  # symlinks kept: agent/resources links into config/, models/
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "-w", str(dist), str(src)], cwd=base)  # fmt: skip
    wheel = next(dist.glob("scanner_agent-*.whl"))
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=base)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
          "--force-reinstall", str(wheel)], cwd=base)  # fmt: skip
    yield venv / "bin"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONNOUSERSITE": "1"}


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{cmd} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working folder outside the checkout, so nothing can be found relative to it."""
    assert ROOT not in tmp_path.parents
    return tmp_path


def test_the_agent_imports_from_the_venv_not_the_checkout(installed: Path, outside: Path) -> None:
    out = _run([str(installed / "python"), "-c", "import agent; print(agent.__file__)"], outside)
    where = Path(out.stdout.strip())
    assert installed.parent in where.parents, where
    assert ROOT not in where.parents, where


def test_check_config_finds_the_shipped_models(installed: Path, outside: Path) -> None:
    out = _run([str(installed / "scanner-agent"), "check-config"], outside)
    assert "ok (agent_id" in out.stdout, out.stdout
    models = [line for line in out.stdout.splitlines() if line.startswith("triage: ")]
    assert {line.split()[1] for line in models} >= {"ich", "bodypart"}, out.stdout
    assert all(str(installed.parent) in line for line in models), out.stdout


def test_inspect_scores_a_head_ct(installed: Path, outside: Path) -> None:
    head = get_testdata_file("693_UNCR.dcm", download=False)
    assert head, "pydicom-data is not installed: pip install pydicom-data"
    out = _run([str(installed / "scanner-agent"), "inspect", head], outside)
    assert "QC " in out.stdout, out.stdout
    assert any(line.strip().startswith("triage ") and "ich@" in line
               for line in out.stdout.splitlines()), out.stdout  # fmt: skip


def test_demo_runs_the_whole_loop(installed: Path, outside: Path) -> None:
    out = _run([str(installed / "scanner-agent"), "demo", "--seconds", "60"], outside, 400)
    assert "reached the PACS stand-in" in out.stdout, out.stdout


def test_the_web_console_ships_its_pages(installed: Path, outside: Path) -> None:
    code = (
        "from importlib import resources; w = resources.files('agent.web');"
        "print(*(p for p in ('templates/base.html', 'templates/login.html', 'static/console.js',"
        " 'static/console.css') if not w.joinpath(p).is_file()))"
    )
    out = _run([str(installed / "python"), "-c", code], outside)
    assert out.stdout.strip() == "", f"missing from the wheel: {out.stdout}"
