"""Operator verbs on the delivery queues: ``quarantine list|retry|drop`` and ``resend``.

They act on the journal directly; a running agent picks the change up within a second.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agent.config import MESSAGE_KINDS, load_config
from agent.errors import AgentError
from agent.journal.database import Journal
from agent.journal.delivery_queue import DeliveryQueue
from agent.journal.message_queue import MessageQueue


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser], config_arg: Any) -> None:
    quarantine = sub.add_parser("quarantine", help="list, retry or drop quarantined deliveries")
    config_arg(quarantine)
    quarantine.add_argument("action", choices=["list", "retry", "drop"])
    quarantine.add_argument("--to", dest="destination", help="only this destination")
    quarantine.add_argument("--series", help="only this SeriesInstanceUID")
    quarantine.add_argument("--json", action="store_true", help="list as JSON")
    quarantine.set_defaults(func=cmd_quarantine)
    resend = sub.add_parser("resend", help="send a series to a destination again")
    config_arg(resend)
    resend.add_argument("--series", required=True, help="SeriesInstanceUID")
    resend.add_argument("--to", dest="destination", required=True, help="destination name")
    resend.set_defaults(func=cmd_resend)


def _queue(args: argparse.Namespace) -> tuple[DeliveryQueue, list[str]]:
    cfg = load_config(args.config)
    path = cfg.storage_path / "journal.sqlite"
    if not path.exists():
        raise AgentError(f"no journal at {path}: has the agent run with this config?")
    return DeliveryQueue(Journal.open(path)), [d.name for d in cfg.forward.destinations]


def cmd_quarantine(args: argparse.Namespace) -> int:
    queue, _ = _queue(args)
    messages = MessageQueue(queue.journal)  # HL7 and FHIR destinations' verdict messages
    if args.action == "list":
        rows = [
            r
            for r in queue.quarantined(args.destination) + messages.quarantined(args.destination)
            if not args.series or r["series_uid"] == args.series
        ]
        print(json.dumps(rows, indent=2) if args.json else _table(rows))
        return 0
    count = 0
    for q in (queue, messages):
        act = q.requeue_quarantined if args.action == "retry" else q.drop_quarantined
        count += act(args.destination, args.series)
    print(f"{args.action}: {count} deliveries")
    return 0


def cmd_resend(args: argparse.Namespace) -> int:
    queue, names = _queue(args)
    if args.destination not in names:
        raise AgentError(
            f"unknown destination {args.destination!r}; configured: {', '.join(names)}"
        )
    if args.destination in _message_destinations(args):  # HL7, FHIR: the verdict again
        if not MessageQueue(queue.journal).resend(args.series, args.destination):
            raise AgentError(f"no verdict message of series {args.series} for {args.destination}")
        print(f"resend: the verdict message queued for {args.destination}")
        return 0
    count = queue.resend(args.series, args.destination)
    if count == 0:
        raise AgentError(f"no stored instances of series {args.series}")
    print(f"resend: {count} instances queued for {args.destination}")
    return 0


def _message_destinations(args: argparse.Namespace) -> set[str]:
    cfg = load_config(args.config)
    return {d.name for d in cfg.forward.destinations if d.kind in MESSAGE_KINDS}


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no quarantined deliveries"
    lines = []
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["updated_at"]))
        lines.append(f"{when}  {r['destination']:12s} {r['sop_instance_uid']}  {r['last_error']}")
    return "\n".join(lines)
