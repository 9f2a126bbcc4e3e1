"""What the terminal console shows, as plain Python: rows, alerts, and commands in flight.

:class:`ConsoleModel` takes the agent's messages (verdicts, alerts, status) and, where the
journal is readable, the journal's own view (:mod:`agent.operator.journal_view`), which is
fresher: a verdict's delivery states are those of the moment it was judged, the journal's
are those of now. A command sent is *pending* until the agent answers it, with the journal's
audit row (``held``, ``refused: already forwarded``) or, for a command refused before it
reached the journal (unknown series, no commands accepted), a system alert.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.operator.journal_view import Answer, SeriesNow
from agent.operator.series_label import series_label

MAX_SERIES = 200  # rows kept; the console shows what happens now, the PACS keeps history
COLUMNS = ("Series", "Mod", "Img", "State", "QC", "Triage", "Delivery", "Time")
# system alerts that answer a command which never reached the journal's audit trail
EARLY_REFUSALS = frozenset({"unknown-series", "commands-unavailable", "unknown-action",
                            "bad-command", "command-too-large", "bad-json"})  # fmt: skip


@dataclass
class SeriesRow:
    uid: str
    description: str = ""
    modality: str = ""
    instances: int = 0
    state: str = ""
    qc: str = ""
    priority: str = ""
    delivery: str = ""
    superseded: bool = False
    updated: float = field(default_factory=time.time)
    label: str = ""  # series_label(): description, else protocol, body part and time

    def cells(self) -> tuple[str, ...]:
        name = self.label or self.description or "unnamed series"
        state = f"{self.state}*" if self.superseded else self.state
        return (name[:22], self.modality, str(self.instances), state, self.qc,
                self.priority or "-", self.delivery or "-",
                time.strftime("%H:%M:%S", time.localtime(self.updated)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Pending:
    action: str
    label: str
    sent_at: float


def _triage_cell(triage: dict[str, Any]) -> str:
    """The priority; ``n/a`` when the series is not what the model was made for."""
    if triage.get("status") == "not_applicable":
        return "n/a"
    return str(triage.get("priority", ""))


def summarize_deliveries(deliveries: Mapping[str, str]) -> str:
    if not deliveries:
        return ""
    states = set(deliveries.values())
    return states.pop() if len(states) == 1 else f"{len(deliveries)} mixed"


@dataclass
class ConsoleModel:
    series: dict[str, SeriesRow] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    agent_state: str = "unknown"
    seen_alert_ids: set[str] = field(default_factory=set)
    journal: dict[str, SeriesNow] = field(default_factory=dict)  # the journal's latest word
    pending: dict[str, Pending] = field(default_factory=dict)  # series uid -> command sent
    answers: dict[str, str] = field(default_factory=dict)  # series uid -> last answer shown
    last_answer_id: int = 0
    journal_readable: bool = False  # False: a console away from the agent, verdicts only

    def apply(self, topic: str, payload: Any) -> dict[str, Any] | None:
        """Take one message (topic below ``P/A``); returns a new alert, else None."""
        if topic == "status" and isinstance(payload, dict):
            self.agent_state = str(payload.get("state", "unknown"))
        elif topic.startswith("series/"):
            self._verdict(topic.removeprefix("series/"), payload)
        elif topic == "alerts" and isinstance(payload, dict):
            return self._alert(payload)
        return None

    def _verdict(self, uid: str, doc: Any) -> None:
        if not isinstance(doc, dict):  # an empty retained message: the series was purged
            self.series.pop(uid, None)
            return
        triage = doc.get("triage") or {}
        row = SeriesRow(
            uid, str(doc.get("series_description", "")), str(doc.get("modality", "")),
            int(doc.get("instances", 0)), str(doc.get("state", "")),
            str((doc.get("qc") or {}).get("status", "")), _triage_cell(triage),
            summarize_deliveries(doc.get("deliveries") or {}), bool(doc.get("superseded")),
            label=series_label(doc),
        )  # fmt: skip
        self.series[uid] = row
        self._overlay(row)
        self._answered_by_verdict(row)
        while len(self.series) > MAX_SERIES:
            self.series.pop(min(self.series.values(), key=lambda r: r.updated).uid)

    def _overlay(self, row: SeriesRow) -> bool:
        """Put the journal's state and deliveries on ``row``; True when that changed it."""
        now = self.journal.get(row.uid)
        if now is None:
            return False
        delivery = summarize_deliveries(now.deliveries) or row.delivery
        changed = (row.state, row.delivery) != (now.state, delivery)
        row.state, row.delivery = now.state, delivery
        return changed

    def apply_journal(self, now: Mapping[str, SeriesNow]) -> list[str]:
        """The journal's view of the shown series; returns the uids whose row changed."""
        self.journal.update(now)
        return [uid for uid, row in self.series.items() if uid in now and self._overlay(row)]

    # -- commands ------------------------------------------------------------------------------

    def sent(self, uid: str, action: str) -> str:
        label = self.series[uid].label if uid in self.series else "series"
        self.pending[uid] = Pending(action, label, time.time())
        return f"{action} {label}: sent, waiting for the agent's answer"

    def answered(self, answer: Answer) -> str | None:
        """The text to show for a journal audit row answering a pending command, else None."""
        self.last_answer_id = max(self.last_answer_id, answer.id)
        pending = self.pending.get(answer.series_uid)
        if pending is None or pending.action != answer.action:
            return None
        del self.pending[answer.series_uid]
        text = f"{answer.action} {pending.label}: {answer.text()}"
        self.answers[answer.series_uid] = text
        return text

    def _answered_by_verdict(self, row: SeriesRow) -> None:
        """Without the journal, the republished verdict is the answer to an applied command."""
        pending = self.pending.get(row.uid)
        if self.journal_readable or pending is None:
            return
        done = {"hold": row.state == "held", "release": row.state in ("released", "forwarded"),
                "repeat": row.superseded}.get(pending.action, False)  # fmt: skip
        if done:
            del self.pending[row.uid]
            self.answers[row.uid] = f"{pending.action} {pending.label}: {row.state}"

    def refused_early(self, alert: Mapping[str, Any]) -> str | None:
        """The text for a system alert refusing a pending command before the journal saw it."""
        uid = str(alert.get("series_uid") or "")
        reasons = alert.get("reasons") or [{}]
        first = reasons[0] if isinstance(reasons[0], Mapping) else {}
        if alert.get("kind") != "system" or uid not in self.pending:
            return None
        # a refusal the journal audited is answered from the journal, with its wording
        codes = EARLY_REFUSALS if self.journal_readable else EARLY_REFUSALS | {"command-refused"}
        if first.get("code") not in codes:
            return None
        pending = self.pending.pop(uid)
        text = f"{pending.action} {pending.label}: refused: {str(first.get('message', ''))[:120]}"
        self.answers[uid] = text
        return text

    def _alert(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        alert_id = str(doc.get("id", ""))
        if alert_id in self.seen_alert_ids:  # at-least-once delivery: drop the duplicate
            return None
        self.seen_alert_ids.add(alert_id)
        self.alerts = [doc, *self.alerts][:50]
        return doc


def alert_text(doc: dict[str, Any]) -> str:
    reasons = "; ".join(str(r.get("message", "")) for r in doc.get("reasons") or [])
    what = doc.get("series_description") or doc.get("series_uid") or "agent"
    action = str(doc.get("action", "none")).upper()
    head = f"{doc.get('severity', '').upper()} {doc.get('kind', '')}"
    return f"{head}: {action if action != 'NONE' else ''} {what}: {reasons}".replace("  ", " ")
