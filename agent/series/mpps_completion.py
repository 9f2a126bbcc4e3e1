"""Completion by MPPS: the modality's own word on what a series holds.

An MPPS COMPLETED lists every series it performed and, per series, every SOP instance. A
series it lists is complete the moment all those instances are in: no grace period, and
no waiting for the association to be released (reason ``mpps``). While some are missing
the series is not completed by its association's release either (the data says more is
coming); the idle timeout stays the last resort. Instances still missing ``series.grace_s``
after the COMPLETED are named in one system alert per series (``mpps.missing``).

A step that lists a series without naming its instances cannot complete it; the other
rules do. Expectations are bounded (:data:`MAX_EXPECTED` series, oldest dropped).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from agent.domain.procedures import ProcedureStep, StepStatus

MAX_EXPECTED = 4096  # series awaited by a COMPLETED step at once
NAMED_IN_ALERT = 10  # missing SOP Instance UIDs spelled out; the rest are counted


@dataclass
class Expected:
    mpps_uid: str
    instances: frozenset[str]
    due: float  # monotonic: when still-missing instances are alerted
    alerted: bool = False

    def missing(self, have: Iterable[str]) -> list[str]:
        return sorted(self.instances - set(have))


class Expectations:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._by_series: OrderedDict[str, Expected] = OrderedDict()

    def add(self, step: ProcedureStep) -> list[str]:
        """Take a COMPLETED step's lists; returns the series it names with instances."""
        if step.status != StepStatus.COMPLETED:
            return []
        named = []
        due = time.monotonic() + self.grace_s
        for series in step.series:
            if not series.instances:
                continue
            self._by_series[series.series_uid] = Expected(
                step.sop_instance_uid, series.instances, due
            )
            self._by_series.move_to_end(series.series_uid)
            named.append(series.series_uid)
        while len(self._by_series) > MAX_EXPECTED:
            self._by_series.popitem(last=False)
        return named

    def get(self, series_uid: str) -> Expected | None:
        return self._by_series.get(series_uid)

    def whole(self, series_uid: str, have: Iterable[str]) -> bool:
        """True when a COMPLETED step listed the series and all its instances are in."""
        exp = self._by_series.get(series_uid)
        return exp is not None and not exp.missing(have)

    def expects_more(self, series_uid: str, have: Iterable[str]) -> bool:
        exp = self._by_series.get(series_uid)
        return exp is not None and bool(exp.missing(have))

    def discard(self, series_uid: str) -> None:
        self._by_series.pop(series_uid, None)

    @property
    def deadline(self) -> float:
        return min((e.due for e in self._by_series.values() if not e.alerted), default=math.inf)

    def overdue(self) -> list[tuple[str, Expected]]:
        """Series whose alert is due now; each is returned once."""
        now = time.monotonic()
        due = [(uid, e) for uid, e in self._by_series.items() if not e.alerted and e.due <= now]
        for _, e in due:
            e.alerted = True
        return due


def missing_message(series_uid: str, exp: Expected, missing: list[str]) -> str:
    named = ", ".join(missing[:NAMED_IN_ALERT])
    more = f" and {len(missing) - NAMED_IN_ALERT} more" if len(missing) > NAMED_IN_ALERT else ""
    return (
        f"MPPS {exp.mpps_uid} COMPLETED lists {len(exp.instances)} instances of series "
        f"{series_uid}; {len(missing)} have not arrived: {named}{more}"
    )


def discontinued_message(step: ProcedureStep) -> str:
    why = f" ({step.discontinued_reason})" if step.discontinued_reason else ""
    series = ", ".join(s.series_uid for s in step.series[:NAMED_IN_ALERT]) or "none listed"
    # no accession number: a system alert bypasses alerts.include_patient_data
    return f"MPPS {step.sop_instance_uid} DISCONTINUED{why}; series: {series}"
