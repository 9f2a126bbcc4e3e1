"""A technologist's command and what applying it did: shared by the alerts room, which
parses commands, and the journal, which applies them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CommandAction = Literal["release", "hold", "repeat"]
ACTIONS: tuple[CommandAction, ...] = ("release", "hold", "repeat")


@dataclass(frozen=True, slots=True)
class Command:
    action: CommandAction
    series_uid: str
    by: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying a command did. ``applied`` False: refused, the series unchanged."""

    command: Command
    applied: bool
    from_state: str
    to_state: str
    message: str


class CommandRejected(Exception):
    """A command that cannot be applied; ``code`` names the error for the system alert."""

    def __init__(self, code: str, message: str, series_uid: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.series_uid = series_uid


class UnknownSeries(CommandRejected):
    def __init__(self, series_uid: str) -> None:
        super().__init__("unknown-series", f"no series {series_uid} in the journal", series_uid)
