"""What would stop ``run`` before it serves, found before any work starts.

Each check returns problems as one line each, ``<yaml path> <value>: <reason>``, so ``run``
can refuse in one line and ``check-config`` can list every problem at once. A check reads or
binds only; it never creates anything.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import ssl
from pathlib import Path

from agent.config import AgentConfig, DimseDestination, MqttTLSConfig, TLSConfig, WebTLSConfig

CPU_EXTRA = "pip install 'scanner-agent[cpu]'"


def startup_problems(cfg: AgentConfig, *, for_run: bool = True) -> list[str]:
    """What stops ``run`` (``for_run``), or everything check-config reports: there the ports
    are left out (the agent may be running beside it) and every TLS file is in. ``run`` checks
    only the listener's: a destination's or the broker's bad files are that sender's error,
    logged and retried as before, never a reason to stop receiving."""
    problems = storage_problems(cfg.storage_path) + tls_problems(cfg, listener_only=for_run)
    problems += onnxruntime_problems(cfg)
    return problems + (port_problems(cfg) if for_run else [])


def storage_problems(path: Path) -> list[str]:
    """The state directory must be, or become, a writable folder."""
    probe = path
    while not probe.exists():  # the nearest existing ancestor decides whether mkdir can work
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return [f"storage.path {path}: cannot use it: {probe} is not a directory"]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [f"storage.path {path}: cannot use it: {probe} is not writable"]
    return []


def tls_problems(cfg: AgentConfig, *, listener_only: bool = False) -> list[str]:
    found: list[str] = []
    if cfg.dicom.tls is not None:
        found += _pem_problems("dicom.tls", cfg.dicom.tls)
    if cfg.web is not None and cfg.web.tls is not None:
        found += _pem_problems("web.tls", cfg.web.tls)
    if listener_only:
        return found
    for i, dest in enumerate(cfg.forward.destinations):
        if isinstance(dest, DimseDestination) and dest.tls is not None:
            found += _pem_problems(f"forward.destinations[{i}].tls", dest.tls)
    if cfg.mqtt is not None and cfg.mqtt.tls is not None:
        found += _pem_problems("mqtt.tls", cfg.mqtt.tls)
    return found


def _pem_problems(where: str, tls: TLSConfig | MqttTLSConfig | WebTLSConfig) -> list[str]:
    """Each file readable, then the pair loaded as ssl will load it (the key must match)."""
    named = {"cert_file": tls.cert_file, "key_file": tls.key_file, "ca_file": tls.ca_file}
    found = [
        f"{where}.{key} {path}: cannot read: {reason}"
        for key, path in named.items()
        if path is not None and (reason := _unreadable(path))
    ]
    if found:
        return found
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        if tls.ca_file is not None:
            ctx.load_verify_locations(cafile=tls.ca_file)
    except ssl.SSLError as exc:
        found.append(f"{where}.ca_file {tls.ca_file}: not a PEM CA certificate: {_ssl_reason(exc)}")
    try:
        if tls.cert_file is not None:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        found.append(
            f"{where}.cert_file {tls.cert_file}: with key_file {tls.key_file}: {_ssl_reason(exc)}"
        )
    return found


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _ssl_reason(exc: ssl.SSLError) -> str:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate"
    return str(exc.reason or exc).lower().replace("_", " ")


def onnxruntime_problems(cfg: AgentConfig) -> list[str]:
    if not cfg.triage.enabled or importlib.util.find_spec("onnxruntime") is not None:
        return []
    return [f"triage.enabled: onnxruntime is not installed: {CPU_EXTRA} (or set it false)"]


def port_problems(cfg: AgentConfig) -> list[str]:
    listeners = [("dicom", cfg.dicom.bind, cfg.dicom.port)]
    if cfg.mrd is not None:
        listeners.append(("mrd", cfg.mrd.bind, cfg.mrd.port))
    if cfg.metrics is not None:
        listeners.append(("metrics", cfg.metrics.bind, cfg.metrics.port))
    if cfg.web is not None:
        listeners.append(("web", cfg.web.bind, cfg.web.port))
    return [p for name, host, port in listeners if (p := bind_problem(name, host, port))]


def bind_problem(name: str, host: str, port: int) -> str | None:
    """Bind and close at once, the way the listener will bind (SO_REUSEADDR, as socketserver)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return f"{name}.port {port}: {describe_bind_error(exc, host)}"
    return None


def describe_bind_error(exc: OSError, host: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {host}: address in use (another process listens there)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {host}: permission denied (below 1024 needs CAP_NET_BIND_SERVICE)"
    return f"cannot listen on {host}: {exc.strerror or exc}"
