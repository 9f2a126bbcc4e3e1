"""How one delivery attempt ended, as the forwarder reports it and the journal records it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    status: int | None = None
    message: str = ""  # the warning for DELIVERED, the reason for QUARANTINED
