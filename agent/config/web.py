"""The web console's section: where it listens, its TLS and its sessions."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.config.fields import Host, Port, Strict


class WebTLSConfig(Strict):
    """HTTPS for the console; PEM files. With TLS the session cookie is also ``Secure``."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None  # given: browsers must present a client certificate it signed


class WebConfig(Strict):
    """The technologist's web console (agent/web/); login required for everything but the
    login page. Loopback unless a site chooses an interface on purpose."""

    bind: Host = "127.0.0.1"
    port: Port = 8080
    tls: WebTLSConfig | None = None
    session_hours: float = Field(default=12.0, gt=0, le=24 * 7)  # a login lasts this long
    max_login_failures: int = Field(default=5, ge=1, le=100)  # per user or address ...
    login_lockout_s: float = Field(default=60.0, gt=0, le=86400)  # ... then refused this long
    sound: bool = True  # a critical alert plays a tone in the browser (each user can mute it)
