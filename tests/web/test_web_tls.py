"""The console over HTTPS: ``web.tls`` with a certificate, and with ``ca_file`` a client
certificate required; under TLS the session cookie is also ``Secure``."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.broker import make_tls
from tests.support.web import PASSWORDS, add_users, web_overrides, web_url

pytestmark = pytest.mark.integration


def test_https_with_client_certificates(agent_factory: Any, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki")
    overrides = web_overrides()
    overrides["web"]["tls"] = {"cert_file": str(tls.server_cert), "key_file": str(tls.server_key),
                               "ca_file": str(tls.ca)}  # fmt: skip
    agent = agent_factory(**overrides)
    add_users(agent)
    agent.start()
    base = web_url(agent).replace("http://", "https://")
    trusting = ssl.create_default_context(cafile=str(tls.ca))
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=trusting) as anonymous:
        anonymous.get(base + "/login")  # no client certificate: the handshake fails
    with_cert = ssl.create_default_context(cafile=str(tls.ca))
    with_cert.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    with httpx.Client(verify=with_cert, base_url=base) as http:
        answer = http.post("/login", data={"username": "tech", "password": PASSWORDS["tech"]})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert http.get("/api/series").status_code == 200
    with pytest.raises(httpx.HTTPError), httpx.Client() as plain:
        plain.get(web_url(agent) + "/login")  # plain HTTP on the TLS port gets no page
