"""What a destination's answer means for the queue (PS3.4 Annex B storage statuses).

0x0000                          delivered
0xB000, 0xB006, 0xB007, 0x0111  delivered, with the warning recorded
0xA7xx, no answer, network      retried with backoff (raised as RetryLater)
0xA9xx, 0xCxxx, anything else   quarantined with the status and its meaning
"""

from __future__ import annotations

from agent.domain.delivery import Kind, Outcome

__all__ = ["Kind", "Outcome", "RetryLater", "meaning", "outcome_for"]


class RetryLater(Exception):
    """The destination cannot take this now; everything from this item on waits."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


WARNINGS = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class (stored anyway)",
    0x0111: "duplicate SOP instance (already stored)",
}
_FAILURES = {
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0x0211: "unrecognized operation",
}


def meaning(status: int) -> str:
    if status in WARNINGS:
        return WARNINGS[status]
    if status in _FAILURES:
        return _FAILURES[status]
    if status & 0xFF00 == 0xA700:
        return "out of resources"
    if status & 0xFF00 == 0xA900:
        return "data set does not match SOP class"
    if status & 0xF000 == 0xC000:
        return "cannot understand"
    return "unknown status"


def outcome_for(status: int | None) -> Outcome:
    """Map a C-STORE status; raises RetryLater for the retryable ones."""
    if status is None:
        raise RetryLater("no response from the destination")
    if status == 0x0000:
        return Outcome(Kind.DELIVERED, status)
    if status in WARNINGS or status & 0xF000 == 0xB000:
        return Outcome(Kind.DELIVERED, status, f"warning 0x{status:04X}: {meaning(status)}")
    if status & 0xFF00 == 0xA700:
        raise RetryLater(f"0x{status:04X}: out of resources", status)
    return Outcome(Kind.QUARANTINED, status, f"0x{status:04X}: {meaning(status)}")
