"""``dicom.tls``: TLS 1.2 or later, client certificates required (``require_client_cert``).

A real agent listens with TLS; dcmtk's storescu (TLS 1.2+, BCP 195 profile) and a
pynetdicom SCU pinned to TLS 1.2 store with the client certificate; a client without one
and a TLS 1.1 client are refused, and nothing they send reaches the spool.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from tests.support.agent_proc import AgentProcess
from tests.support.broker import TlsFiles, make_tls
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import storescu

pytestmark = pytest.mark.integration


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "certs")


@pytest.fixture(params=[1, 2], ids=["in-daemon", "2-receive-processes"])
def tls_agent(
    agent_factory: type[AgentProcess], tls: TlsFiles, request: pytest.FixtureRequest
) -> AgentProcess:
    return agent_factory(
        dicom={"tls": {"cert_file": str(tls.server_cert), "key_file": str(tls.server_key),
                       "ca_file": str(tls.ca), "require_client_cert": True},
               "receive_processes": request.param},
    ).start()  # fmt: skip


def client_context(tls: TlsFiles, *, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    if cert:
        ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return ctx


def store_over_tls(port: int, path: Path, ctx: ssl.SSLContext) -> int | None:
    """C-STORE one file with pynetdicom over TLS; None when no association was established."""
    ds = dcmread(path)
    ae = AE(ae_title="SCANNER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE", tls_args=(ctx, "127.0.0.1"))
    if not assoc.is_established:
        return None
    status = int(assoc.send_c_store(ds).Status)
    assoc.release()
    return status


def stored_uids(agent: AgentProcess) -> set[str]:
    return {r[0] for r in agent.query("SELECT sop_instance_uid FROM instances")}


def test_clients_with_certificates_store(
    tls_agent: AgentProcess, tls: TlsFiles, tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "ct", 2)
    storescu(tls_agent.port, [files[0]], extra=[
        "+tls", str(tls.client_key), str(tls.client_cert), "+cf", str(tls.ca),
    ])  # fmt: skip
    tls12 = client_context(tls)
    tls12.minimum_version = tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert store_over_tls(tls_agent.port, files[1], tls12) == 0x0000
    assert stored_uids(tls_agent) == {str(dcmread(f).SOPInstanceUID) for f in files}


def test_client_without_certificate_is_refused(
    tls_agent: AgentProcess, tls: TlsFiles, tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "ct", 1)
    assert store_over_tls(tls_agent.port, files[0], client_context(tls, cert=False)) is None
    refused = storescu(tls_agent.port, files, check=False,
                       extra=["+tla", "+cf", str(tls.ca)])  # fmt: skip
    assert refused.returncode != 0
    assert stored_uids(tls_agent) == set()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_1_client_is_refused(tls_agent: AgentProcess, tls: TlsFiles, tmp_path: Path) -> None:
    old = client_context(tls)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
    with (
        socket.create_connection(("127.0.0.1", tls_agent.port), timeout=30) as sock,
        pytest.raises(ssl.SSLError) as refused,
    ):
        old.wrap_socket(sock, server_hostname="127.0.0.1")
    # the server's protocol_version alert, not a client that could not offer TLS 1.1
    assert "PROTOCOL_VERSION" in str(refused.value).upper(), refused.value
    files = write_ct_series(tmp_path / "ct", 1)
    assert store_over_tls(tls_agent.port, files[0], old) is None
    assert stored_uids(tls_agent) == set()
