"""Messages the broker or the client will not take, and what the publisher does about them.

Three ways a single outbox row can be refused:

- before sending, :func:`unsendable` finds a topic paho or Mosquitto would refuse (a
  wildcard, NUL, a control character) or a payload over MQTT's size limit;
- paho raises while queueing it (ValueError and the like): the row alone is to blame;
- the broker closes the connection while it is in flight (a malformed packet, a packet over
  the broker's ``max_packet_size``). Several rows are in flight at once, so after such a loss
  the publisher sends the rows that were in flight one at a time; a row that loses the
  connection :data:`MAX_SEND_FAILURES` times while alone in flight is the one.

Each is quarantined in the outbox with its reason and answered with a ``system`` alert
(code ``mqtt-refused``), so it is never retried for ever and the rows behind it go out.
"""

from __future__ import annotations

from agent.alerts.outbox import Entry
from agent.alerts.topics import topic_problem
from agent.domain.verdicts import Alert, system_alert

MAX_SEND_FAILURES = 3  # a broker restart mid-send costs one; three in a row is the message
MAX_PAYLOAD_BYTES = 268_435_455  # MQTT's remaining-length limit (paho's check too)
REFUSED_CODE = "mqtt-refused"
_SHOWN = 120  # characters of a hostile topic or UID repeated in the alert


def unsendable(topic: str, payload: bytes) -> str | None:
    """Why this PUBLISH cannot succeed, found before it is sent; None when it may."""
    problem = topic_problem(topic)
    if problem is not None:
        return problem
    if len(payload) > MAX_PAYLOAD_BYTES:
        return f"payload is {len(payload)} bytes, over the MQTT limit of {MAX_PAYLOAD_BYTES}"
    return None


def lost_link_reason(failures: int) -> str:
    return f"the broker closed the connection each of the {failures} times this message was sent"


def refusal_alert(entry: Entry, topic: str, reason: str) -> Alert | None:
    """The system alert for a quarantined row; None for a refusal alert itself, so a broker
    that refuses everything cannot start an endless chain of alerts about alerts."""
    if entry.kind == "alert" and f'"{REFUSED_CODE}"' in entry.payload:
        return None
    message = (
        f"{entry.kind} for topic {ascii(topic)[:_SHOWN]} was not published and is quarantined"
        f" in the outbox: {reason}"
    )
    uid = (entry.series_uid or "")[:_SHOWN]  # JSON-escaped on the wire; bounded in size
    return system_alert(REFUSED_CODE, message, severity="warning", series_uid=uid)
