"""A real Orthanc PACS for tests: its own folder, free ports, REST checks, stopped by pid."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.peers import free_port, require_tool, stop_process, wait_for_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class Orthanc:
    def __init__(self, folder: Path, *, aet: str = "PACS", **settings: Any) -> None:
        self.folder = folder
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": False,
            "StorageCompression": False,
            "OverwriteInstances": True,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
        }
        cfg.update(self.settings)
        return cfg

    def destination(self, name: str | None = None) -> dict[str, Any]:
        """This server as the agent's DIMSE destination (named after its AE title)."""
        return {"name": name or self.aet.lower(), "ae_title": self.aet, "host": "127.0.0.1",
                "port": self.dicom_port}  # fmt: skip

    def start(self) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg_path = self.folder / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(), indent=2))
        log = (self.folder / "orthanc.log").open("ab")
        self.proc = subprocess.Popen([require_tool("Orthanc"), str(cfg_path)], stdout=log, stderr=log)
        wait_for_port(self.http_port, 60, self.proc)
        wait_for_port(self.dicom_port, 60, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    # -- REST ------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as rsp:
            body = rsp.read()
        return json.loads(body) if rsp.headers.get_content_type() == "application/json" else body

    def instance_ids(self) -> list[str]:
        return list(self.get("/instances"))

    def sop_instance_uids(self) -> dict[str, str]:
        """SOPInstanceUID -> Orthanc instance id, for everything stored."""
        out = {}
        for oid in self.instance_ids():
            tags = self.get(f"/instances/{oid}/simplified-tags")
            out[tags["SOPInstanceUID"]] = oid
        return out

    def file_bytes(self, orthanc_id: str) -> bytes:
        data: bytes = self.get(f"/instances/{orthanc_id}/file")
        return data

    def wait_for_count(self, count: int, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        ids: list[str] = []
        while time.monotonic() < deadline:
            try:
                ids = self.instance_ids()
            except (urllib.error.URLError, ConnectionError):
                ids = []
            if len(ids) >= count:
                return ids
            time.sleep(0.2)
        raise AssertionError(f"Orthanc {self.aet} holds {len(ids)} instances, expected {count}")

    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")
