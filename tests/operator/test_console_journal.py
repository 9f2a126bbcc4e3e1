"""The console beside a running notifier and a real journal: the Delivery column follows the
journal after the verdict, a command shows the journal's answer (a refused hold says so), and
rows without a description are named by what they are, not by a UID tail."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from agent.alerts.notifier import Notifier
from agent.domain.delivery import Kind, Outcome
from agent.journal.database import Journal, connect
from agent.journal.delivery_queue import DeliveryQueue
from agent.journal.series_actions import SeriesActions
from agent.operator.console import ConsoleApp
from agent.operator.console_model import ConsoleModel
from agent.operator.journal_view import JournalView
from tests.support.alert_samples import agent_config, seed_series, series_uid, verdict

pytestmark = pytest.mark.anyio


async def until(predicate: object, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.05)


def cell(app: ConsoleApp, uid: str, column: str) -> str:
    table = app.query_one("DataTable")
    return str(table.get_cell(uid, column))  # type: ignore[attr-defined]


async def press_on(app: ConsoleApp, pilot: object, uid: str, key: str) -> None:
    table = app.query_one("DataTable")
    table.move_cursor(row=table.get_row_index(uid))  # type: ignore[attr-defined]
    await pilot.press(key)  # type: ignore[attr-defined]


async def test_delivery_follows_the_journal_and_answers_are_true(tmp_path: Path) -> None:
    storage = tmp_path / "state"
    cfg = agent_config(storage)  # no broker: the feed and the commands folder
    sent, fresh = series_uid(21), series_uid(22)
    seed_series(storage, sent, fresh)
    journal = Journal.open(storage / "journal.sqlite")
    journal.release_series(sent, ["local"])  # queued for the PACS
    control = SeriesActions(connect(storage / "journal.sqlite"), ["local"])
    notifier = Notifier.open(cfg, control)
    app = ConsoleApp(cfg, by="tech-cleo")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            await notifier.series_verdict(verdict(sent, state="released", status="pass"))
            await notifier.series_verdict(verdict(fresh, state="complete", series_description=""))
            async with app.run_test(size=(80, 24)) as pilot:
                await until(lambda: {sent, fresh} <= set(app.model.series))
                await pilot.pause()
                assert cell(app, sent, "Delivery") == "queued"
                queue = DeliveryQueue(journal)  # the forwarder delivers, the verdict stays
                queue.record(
                    [(item, Outcome(Kind.DELIVERED)) for item in queue.next_batch("local", 10)]
                )
                await until(lambda: app.model.series[sent].delivery == "delivered")
                await pilot.pause()
                assert cell(app, sent, "Delivery") == "delivered"
                assert cell(app, sent, "State") == "forwarded"

                await press_on(app, pilot, sent, "h")
                await until(lambda: sent in app.model.answers)
                assert app.model.answers[sent] == (
                    "hold Head 5mm: refused: already forwarded"
                    " (cannot hold a series that is forwarded)"
                )
                await press_on(app, pilot, fresh, "h")
                await until(lambda: fresh in app.model.answers)
                assert app.model.answers[fresh].endswith(": held")
                await until(lambda: cell(app, fresh, "State") == "held")

                name = cell(app, fresh, "Series")
                assert name.startswith("CT · ") and fresh[-6:] not in name

            tg.cancel_scope.cancel()
    finally:
        notifier.close()
        journal.close()


def test_away_from_the_journal_the_agent_answers_by_alert_and_verdict(tmp_path: Path) -> None:
    model = ConsoleModel()  # a console on another machine: no journal to read
    uid, other = series_uid(31), series_uid(32)
    model.apply(f"series/{uid}", json.loads(verdict(uid, state="forwarded").to_json()))
    model.apply(f"series/{other}", json.loads(verdict(other, state="complete").to_json()))
    model.sent(uid, "hold")
    refusal = {
        "id": "a1",
        "kind": "system",
        "series_uid": uid,
        "reasons": [
            {"code": "command-refused", "message": "cannot hold a series that is forwarded"}
        ],
    }
    alert = model.apply("alerts", refusal)
    assert alert is not None
    assert (
        model.refused_early(alert)
        == "hold Head 5mm: refused: cannot hold a series that is forwarded"
    )
    model.sent(other, "hold")
    assert other in model.pending, "sent is not an answer"
    model.apply(f"series/{other}", json.loads(verdict(other, state="held").to_json()))
    assert model.answers[other] == "hold Head 5mm: held" and not model.pending


def test_journal_view_of_a_missing_or_empty_journal(tmp_path: Path) -> None:
    view = JournalView(tmp_path / "journal.sqlite")
    assert (
        view.series_now(["1.2.3"]) == {}
        and view.answers_after(0) == []
        and view.last_answer_id() == 0
    )
    Journal.open(tmp_path / "journal.sqlite").close()  # no series_audit table yet
    assert view.answers_after(0) == [] and view.series_now(["1.2.3"]) == {}
