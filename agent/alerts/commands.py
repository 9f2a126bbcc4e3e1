"""Technologist commands: release, hold or repeat a series.

A command arrives as JSON on ``P/A/commands/<user>`` or ``P/A/commands`` (or, without a
broker, as a file the console drops into ``<storage>/commands/``)::

    {"action": "release" | "hold" | "repeat", "series_uid": "1.2.3...", "by": "jdoe"}

Who is recorded in the audit: on ``P/A/commands/<user>`` the user named by the topic, which
the broker's ACL lets only that authenticated user write (config/mosquitto/acl.example);
``by`` is then optional and ignored. On the shared ``P/A/commands`` anyone allowed to publish
can claim any name, so ``by`` is recorded as ``"<by> (unauthenticated)"``. A file in the
commands folder is recorded with its ``by`` as written: only local accounts can drop one.

Everything from the network is hostile: :func:`parse_command` checks size, JSON, the schema
(unknown keys are refused, so a typo is not silently ignored) and raises
:class:`CommandRejected`. :class:`CommandHandler` turns every refusal into a ``system``
alert naming the error, and never lets one stop the listener.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.domain.commands import (
    ACTIONS,
    Command,
    CommandRejected,
    Outcome,
)
from agent.domain.verdicts import Alert, Severity, system_alert

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 4096
UNAUTHENTICATED = " (unauthenticated)"
_USER_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # a topic level that names a broker user


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str
    series_uid: str = Field(pattern=r"^[0-9.]{1,64}$")  # a DICOM UID: digits and dots
    by: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"
    )  # required unless the topic names the user


class SeriesControl(Protocol):
    """Applies commands to series; blocking (SQLite), so it is called in a worker thread.
    :class:`agent.journal.series_actions.SeriesActions` is the journal's implementation."""

    def apply(self, command: Command) -> Outcome:
        """Raise :class:`UnknownSeries` for a series the journal does not know."""
        ...


def parse_command(payload: bytes, user: str | None = None, *, shared: bool = False) -> Command:
    """``user``: the broker user of ``P/A/commands/<user>``; ``shared``: from the shared
    ``P/A/commands``. Neither: from the local commands folder."""
    if user is not None and not _USER_RE.fullmatch(user):
        raise CommandRejected(
            "bad-command", f"command topic names no valid user: {ascii(user)[:80]}"
        )
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRejected("command-too-large", f"command over {MAX_COMMAND_BYTES} bytes")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandRejected("bad-json", f"command is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CommandRejected("bad-command", "command must be a JSON object")
    try:
        fields = _Schema.model_validate(doc)
    except ValidationError as exc:
        raise CommandRejected("bad-command", _first_problem(exc)) from None
    action = next((a for a in ACTIONS if a == fields.action), None)
    if action is None:
        raise CommandRejected(
            "unknown-action",
            f"unknown action {fields.action[:32]!r}; expected release, hold or repeat",
            fields.series_uid,
        )
    if user is not None:
        return Command(action, fields.series_uid, user)
    if fields.by is None:
        raise CommandRejected("bad-command", "by: required", fields.series_uid)
    return Command(action, fields.series_uid, fields.by + UNAUTHENTICATED if shared else fields.by)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "command"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if err["type"] == "missing":
        return f"{where}: required"
    return f"{where}: {err['msg']}"


AlertSink = Callable[[Alert], Awaitable[None]]
OutcomeSink = Callable[[Outcome], Awaitable[None]]


class CommandHandler:
    """Parse, apply, and answer refusals with system alerts."""

    def __init__(self, control: SeriesControl | None, alert: AlertSink, done: OutcomeSink):
        self._control = control
        self._alert = alert
        self._done = done

    async def __call__(
        self, payload: bytes, user: str | None = None, *, shared: bool = False
    ) -> Outcome | None:
        try:
            command = parse_command(payload, user, shared=shared)
            outcome = await self._apply(command)
        except CommandRejected as exc:
            log.warning("command refused (%s): %s", exc.code, exc.message)
            await self._alert(_refusal(exc.code, exc.message, exc.series_uid))
            return None
        log.info(
            "command %s of series %s by %s: %s",
            command.action, command.series_uid, command.by, outcome.message,
        )  # fmt: skip
        if not outcome.applied:
            await self._alert(_refusal("command-refused", outcome.message, command.series_uid))
        await self._done(outcome)
        return outcome

    async def _apply(self, command: Command) -> Outcome:
        if self._control is None:
            raise CommandRejected(
                "commands-unavailable", "this agent does not accept commands", command.series_uid
            )
        return await anyio.to_thread.run_sync(self._control.apply, command)


def _refusal(code: str, message: str, series_uid: str, severity: Severity = "warning") -> Alert:
    return system_alert(code, message, severity=severity, series_uid=series_uid)
