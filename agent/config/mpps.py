"""The ``mpps`` and ``worklist`` sections: the hospital's RIS around the scanner.

``mpps``: the agent is always an MPPS SCP on its DICOM listener; ``forward_to`` names the
RIS or PACS each N-CREATE and N-SET is passed on to (durably queued in the journal and
retried with backoff; see agent/forward/mpps_forward.py). ``worklist``: before a series is
forwarded, its accession number and patient ID are checked against the RIS worklist by
C-FIND (see agent/verdict/worklist.py); omitted means no check.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.config.fields import AETitle, Host, Port, Seconds, Strict, repeated


class MppsPeer(Strict):
    """A RIS or PACS that receives the MPPS messages the modality sent us."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # None: ae_title
    ae_title: AETitle
    host: Host
    port: Port
    calling_ae_title: AETitle | None = None  # default: dicom.ae_title
    timeout_s: Seconds = 30.0

    @property
    def label(self) -> str:
        return self.name or self.ae_title


class MppsConfig(Strict):
    forward_to: list[MppsPeer] = Field(default_factory=list)
    retry_initial_s: Seconds = 2.0  # backoff after a failed send, doubling
    retry_max_s: Seconds = 300.0  # up to this; retried without limit (nothing is dropped)
    alert_after_s: Seconds = 600.0  # a system alert when a message waits longer than this

    @model_validator(mode="after")
    def _unique_peers(self) -> MppsConfig:
        if twice := repeated([p.label for p in self.forward_to]):
            raise ValueError(f"forward_to: each peer needs its own name; twice: {twice}")
        return self


class WorklistConfig(Strict):
    """The RIS's Modality Worklist SCP, asked before a series is forwarded."""

    ae_title: AETitle
    host: Host
    port: Port
    calling_ae_title: AETitle | None = None  # default: dicom.ae_title
    timeout_s: Seconds = 10.0  # per C-FIND; past it the RIS counts as unreachable
    cache_s: float = Field(default=60.0, ge=0, le=3600)  # one answer serves a study's series
