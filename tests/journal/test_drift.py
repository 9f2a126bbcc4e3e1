"""The drift watch: a shifted score distribution raises one alert, a steady one none, and
``drift pin`` makes the latest window the baseline; ``drift`` also shows how often the
technologists agreed with a QC fail (issue 14)."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import yaml

from agent.domain.commands import Command
from agent.journal import drift_log, verdict_log
from agent.journal.database import Journal, connect
from agent.journal.series_actions import SeriesActions
from agent.monitor.drift import DriftWatch, psi, table
from tests.support.alert_samples import seed_series
from tests.support.cli import scanner_agent

KEY = "triage:ich@0.3.0:haemorrhage"


def _seed(journal: Journal, values: np.ndarray, start: int) -> None:
    for i, v in enumerate(values):
        with journal.transaction() as db:
            drift_log.record(db, f"1.2.{start + i}", [(KEY, float(v)), ("qc:CT:ring_hu", 3.0 + v)])


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    base = list(rng.normal(0.1, 0.02, 500))
    assert psi(base, list(rng.normal(0.1, 0.02, 500))) < 0.1
    assert psi(base, list(rng.normal(0.16, 0.02, 500))) > 0.25
    assert np.isnan(psi(base, base[:10])), "too few samples: not judged"


def test_a_shift_alerts_once_and_a_pin_accepts_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    journal = Journal.open(tmp_path / "journal.sqlite")
    alerts: list[tuple[str, str]] = []

    async def alert(code: str, message: str) -> None:
        alerts.append((code, message))

    watch = DriftWatch(alert)
    try:
        _seed(journal, rng.normal(0.1, 0.02, 500), 0)
        _seed(journal, rng.normal(0.1, 0.02, 300), 500)
        with journal.reading() as db:
            assert anyio.run(watch.check, table(db)) == [], "a steady distribution: no alert"
        _seed(journal, rng.normal(0.2, 0.02, 500), 800)  # the whole window shifted
        with journal.reading() as db:
            rows = {r.key: r for r in table(db)}
        assert rows[KEY].drifted and rows[KEY].baseline_n == rows[KEY].window_n == 500
        assert anyio.run(watch.check, list(rows.values())) == ["qc:CT:ring_hu", KEY]
        assert anyio.run(watch.check, list(rows.values())) == [], "once per key, not per verdict"
        assert alerts[1][0] == "drift" and "PSI" in alerts[1][1] and KEY in alerts[1][1]
        with journal.reading() as db:  # between the baseline and the window: pruned
            count = db.execute("SELECT COUNT(*) FROM drift_samples WHERE key = ?", (KEY,))
            assert count.fetchone()[0] == 1000
        with journal.transaction() as db:
            assert drift_log.pin(db) == 2
        with journal.reading() as db:
            assert not any(r.drifted for r in table(db)), "the pinned window is the baseline"
    finally:
        journal.close()


def test_the_drift_verb_prints_the_table_and_pins(tmp_path: Path) -> None:
    storage = tmp_path / "state"
    storage.mkdir()
    journal = Journal.open(storage / "journal.sqlite")
    rng = np.random.default_rng(3)
    _seed(journal, rng.normal(0.1, 0.02, 500), 0)
    _seed(journal, rng.normal(0.3, 0.02, 500), 500)
    journal.close()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"path": str(storage)}}))
    shown = scanner_agent("drift", config=cfg)
    assert shown.returncode == 0, shown.stderr
    assert KEY in shown.stdout and "DRIFT" in shown.stdout
    pinned = scanner_agent("drift", "pin", config=cfg)
    assert "2 keys pinned" in pinned.stdout and "DRIFT" not in pinned.stdout
    (tmp_path / "empty").mkdir()
    cfg.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "empty")}}))
    missing = scanner_agent("drift", config=cfg)
    assert missing.returncode == 1 and "no journal at" in missing.stderr


def test_the_drift_verb_shows_how_often_technologists_agree_with_a_fail(tmp_path: Path) -> None:
    storage = tmp_path / "state"
    judged = {"1.2.1": "fail", "1.2.2": "fail", "1.2.3": "fail", "1.2.4": "fail", "1.2.5": "pass"}
    seed_series(storage, *judged)
    journal = Journal.open(storage / "journal.sqlite")
    with journal.transaction() as db:
        for uid, status in judged.items():
            verdict_log.record(db, verdict_log.Judged(uid, "ct-head", status, 1.0))
    journal.close()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"path": str(storage)}}))
    assert "no decision yet (4 failed series)" in scanner_agent("drift", config=cfg).stdout
    actions = SeriesActions(connect(storage / "journal.sqlite"), ["local"])
    decisions = [("1.2.1", "repeat"), ("1.2.2", "repeat"), ("1.2.3", "release"),
                 ("1.2.4", "hold"), ("1.2.5", "release"),  # a hold decides nothing; 1.2.5 passed
                 ("1.2.3", "release")]  # refused the second time: counted once  # fmt: skip
    for uid, action in decisions:
        actions.apply(Command(action, uid, "tech-anna"))  # type: ignore[arg-type]
    shown = scanner_agent("drift", config=cfg)
    assert shown.returncode == 0, shown.stderr
    assert (
        "agreement with QC fails: 67% (2 repeated, 1 released of 3 decided; 4 failed series)"
        in shown.stdout
    ), shown.stdout
