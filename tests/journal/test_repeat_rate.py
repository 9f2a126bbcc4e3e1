"""The repeat rate comes from the journal: image series received, how many the technologist
marked for a repeat; result objects (derived series) are left out, and a second repeat of
the same series counts once."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from agent.domain.commands import Command
from agent.journal.database import Journal, connect
from agent.journal.series_actions import SeriesActions, repeat_rate
from agent.operator.status import format_text, read_status
from tests.support.alert_samples import seed_series, series_uid


def test_repeat_rate_counts_repeated_image_series_once(tmp_path: Path) -> None:
    uids = [series_uid(n) for n in range(1, 5)]
    seed_series(tmp_path, *uids)
    journal = Journal.open(tmp_path / "journal.sqlite")
    try:
        journal.mark_derived(uids[3], uids[0])  # a result object's series: not a scan
    finally:
        journal.close()
    repeated: list[tuple[str, str]] = []
    actions = SeriesActions(connect(tmp_path / "journal.sqlite"), ["local"],
                            on_repeat=lambda uid, by: repeated.append((uid, by)))  # fmt: skip
    start = time.time()
    for _ in range(2):
        assert actions.apply(Command("repeat", uids[1], "tech-anna")).applied
    assert repeated == [(uids[1], "tech-anna")] * 2, "on_repeat runs after each repeat"
    with closing(connect(tmp_path / "journal.sqlite", readonly=True)) as conn:
        rate = repeat_rate(conn)
        assert rate == {"series": 3, "repeated": 1, "rate": round(1 / 3, 4)}
        assert repeat_rate(conn, since=start + 3600) == {"series": 0, "repeated": 0, "rate": 0.0}
    doc = read_status(tmp_path / "journal.sqlite", ["local"])
    assert doc["repeats"] == rate
    assert "repeats: 1 of 3 series (rate 33.3%)" in format_text(doc)


def test_status_without_a_journal_has_no_repeats(tmp_path: Path) -> None:
    doc = read_status(tmp_path / "none.sqlite", ["local"])
    assert doc["repeats"] == {"series": 0, "repeated": 0, "rate": 0.0}
