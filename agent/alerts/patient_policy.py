"""Which patient data an alert or verdict may carry on the wire: the site's ``alerts:`` choice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from agent.config import AlertsConfig
from agent.domain.verdicts import Alert, Verdict


@dataclass(frozen=True, slots=True)
class PatientPolicy:
    """The site's choice of patient data on the wire (``alerts:`` in the config)."""

    include_patient_data: bool = True
    patient_fields: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: AlertsConfig) -> PatientPolicy:
        return cls(cfg.include_patient_data, tuple(cfg.patient_fields))

    def patient(self, source: Any) -> dict[str, str]:
        """The configured fields from a pydicom Dataset or a mapping, as strings."""
        found = {k: _lookup(source, k) for k in self.patient_fields}
        return {k: str(v) for k, v in found.items() if v not in (None, "")}

    def _filter(self, patient: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in patient.items() if k in self.patient_fields}

    def apply_alert(self, alert: Alert) -> Alert:
        if not self.include_patient_data:
            return replace(alert, accession_number=None, patient={})
        return replace(alert, patient=self._filter(alert.patient))

    def apply_verdict(self, verdict: Verdict) -> Verdict:
        if not self.include_patient_data:
            return replace(verdict, accession_number=None, patient={})
        return replace(verdict, patient=self._filter(verdict.patient))


def _lookup(source: Any, keyword: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(keyword)
    return getattr(source, keyword, None)
