"""Real peers for integration tests: free ports, required tools, processes stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = {
    "storescu": "dcmtk (Debian: apt-get install -y dcmtk)",
    "storescp": "dcmtk (Debian: apt-get install -y dcmtk)",
    "mosquitto": "Mosquitto (Debian: apt-get install -y mosquitto)",
    "Orthanc": "Orthanc (Debian: apt-get install -y orthanc)",
    "systemd-analyze": "systemd (Debian: apt-get install -y systemd)",
    "ismrmrd_generate_cartesian_shepp_logan": "ismrmrd-tools (Debian: apt-get install -y ismrmrd-tools)",
    "ismrmrd_recon_cartesian_2d": "ismrmrd-tools (Debian: apt-get install -y ismrmrd-tools)",
}


def require_tool(name: str) -> str:
    """The tool's path; a missing peer fails the test with an install hint, never skips."""
    if name in DCMTK_TOOLS:
        return require_dcmtk(name)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install {INSTALL_HINT.get(name, name)}")
    return path


DCMTK_TOOLS = {"storescu", "storescp", "echoscu", "dcmsend"}


def require_dcmtk(name: str) -> str:
    """A dcmtk tool. pynetdicom installs Python apps of the same names, so check the vendor."""
    candidates = [str(Path(d) / name) for d in os.environ.get("PATH", "").split(os.pathsep)]
    for candidate in ["/usr/bin/" + name, *candidates]:
        if not os.access(candidate, os.X_OK):
            continue
        out = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False)
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return candidate
    pytest.fail(
        f"dcmtk's {name} is not installed: install dcmtk (Debian: apt-get install -y dcmtk)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def dcmtk_env() -> dict[str, str]:
    """dcmtk without Nagle's algorithm, or timings measure the kernel's 40 ms delays."""
    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(
    port: int, files: list[Path], *, called: str = "EDGE", calling: str = "SCANNER",
    timeout: float = 300, check: bool = True, extra: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Send ``files`` over one association with dcmtk's storescu."""
    cmd = [require_tool("storescu"), "-v", "-aet", calling, "-aec", called,
           *(extra or []), "127.0.0.1", str(port), *map(str, files)]  # fmt: skip
    result = subprocess.run(
        cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"storescu failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


# storescu proposes only uncompressed syntaxes unless told which compressed one to offer
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
}  # fmt: skip


def storescu_as_is(port: int, path: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Send one file in its own transfer syntax, compressed ones included."""
    from pydicom import dcmread

    ts = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    option = STORESCU_TS_OPTION.get(ts)
    return storescu(port, [path], extra=["-R", option] if option else [], **kwargs)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return int(proc.returncode)


class StoreSCP:
    """dcmtk's storescp writing what it receives into ``out``; ``flags`` go before the port."""

    def __init__(self, out: Path, *flags: str, aet: str = "PACS") -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.aet, self.port = out, aet, free_port()
        self.proc = subprocess.Popen(
            [require_tool("storescp"), *flags, "-aet", aet, "-od", str(out), str(self.port)],
            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, 30, self.proc)

    def received(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def stop(self) -> None:
        stop_process(self.proc)
