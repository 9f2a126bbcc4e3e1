"""Sections for what comes in: storage, the DICOM listener, series completion, MRD."""

from __future__ import annotations

from pathlib import Path

from pydantic import ByteSize, Field, field_validator

from agent.config.fields import AETitle, Host, Port, Seconds, Strict


class TLSConfig(Strict):
    """TLS for a DICOM listener or connection; paths are PEM files."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = True


class StorageConfig(Strict):
    path: Path | None = None  # None: $STATE_DIRECTORY, else ~/.local/state/scanner-agent
    min_free_bytes: ByteSize = ByteSize(1 << 30)  # refuse (0xA700) below this much free disk
    max_spool_bytes: ByteSize | None = None  # refuse above this much spooled data
    retention_hours: float = Field(default=24.0, ge=0)  # keep delivered files this long
    purge_interval_s: Seconds = 60.0


class DicomConfig(Strict):
    ae_title: AETitle = "EDGE"
    bind: Host = "0.0.0.0"
    port: Port = 11112
    allowed_calling_aets: list[AETitle] = []  # empty: any calling AE
    require_called_aet: bool = True
    max_associations: int = Field(default=16, ge=1, le=256)
    max_pdu: int = Field(default=262144, ge=0, le=1 << 26)  # 0: unlimited
    network_timeout_s: Seconds = 60.0
    # from connecting (TLS handshake included) to a complete A-ASSOCIATE-RQ; also ACSE/ARTIM
    acse_timeout_s: Seconds = 10.0
    max_associations_per_peer: int | None = Field(default=None, ge=1, le=256)  # None: no cap
    # connections still owing their A-ASSOCIATE-RQ (TLS handshakes included); past it the
    # oldest of the host with the most is closed, so a flood cannot take threads or fds
    max_pending_connections: int = Field(default=64, ge=1, le=4096)
    # one data set as received; beyond it the transfer is discarded and answered 0xA700
    max_dataset_bytes: ByteSize = Field(default=ByteSize(2 << 30), ge=1 << 20)
    # a deflated data set's inflated size; pydicom (here and in QC and forwarding) inflates
    # in memory, so this bounds the memory one instance can cost; beyond it 0xA700
    max_inflated_bytes: ByteSize = Field(default=ByteSize(256 << 20), ge=1 << 20)
    max_sequence_depth: int = Field(default=32, ge=1, le=100)  # deeper: 0xC210
    tls: TLSConfig | None = None
    # processes accepting C-STOREs on the port (agent/receive/workers.py); 1: in the daemon
    receive_processes: int = Field(default=1, ge=1, le=32)


class SeriesConfig(Strict):
    """When a series counts as complete; see :mod:`agent.series.assembler`."""

    grace_s: float = Field(default=0.5, ge=0, le=10)  # after the last association's release
    idle_timeout_s: dict[str, Seconds] = {"default": 60.0, "CT": 30.0, "MR": 60.0}

    @field_validator("idle_timeout_s")
    @classmethod
    def _needs_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("must have a 'default' entry")
        return value


class MrdConfig(Strict):
    bind: Host = "0.0.0.0"
    port: Port = 9002
    max_message_bytes: ByteSize = ByteSize(64 << 20)  # one MRD message; larger ends the stream
    max_slice_bytes: ByteSize = ByteSize(512 << 20)  # one slice's k-space buffer
    max_open_bytes: ByteSize = ByteSize(1 << 30)  # all open slices of one connection
    max_connections: int = Field(default=4, ge=1, le=64)  # more are closed at once
    idle_timeout_s: Seconds = 60.0  # a connection silent this long is closed
