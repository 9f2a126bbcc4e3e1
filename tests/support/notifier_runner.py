"""Runs only the notifier, as its own process, so a test can kill -9 it.

    python -m tests.support.notifier_runner CONFIG

Each stdin line is JSON: {"verdict": SERIES_UID} publishes a failing verdict and a repeat
alert for it; {"burst": N, "base": UID} N of them; {"system": CODE} a system alert. It
prints "ok" after each, once queued.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import anyio

from agent.alerts.notifier import Notifier
from agent.config import load_config
from agent.domain.verdicts import system_alert
from agent.journal.database import Journal, connect
from agent.journal.series_actions import SeriesActions
from tests.support.alert_samples import repeat_alert, verdict


async def main(config: Path) -> None:
    cfg = load_config(config)
    cfg.storage_path.mkdir(parents=True, exist_ok=True)
    Journal.open(cfg.storage_path / "journal.sqlite").close()  # the schema
    control = SeriesActions(connect(cfg.storage_path / "journal.sqlite"), ["local"])
    notifier = Notifier.open(cfg, control)
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run, name="notifier")
        while line := await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
            doc = json.loads(line)
            if "verdict" in doc:
                v = verdict(doc["verdict"])
                await notifier.series_verdict(v, repeat_alert(v))
            elif "burst" in doc:  # for the benchmark: N verdicts, each with an alert
                for n in range(int(doc["burst"])):
                    v = verdict(f"{doc['base']}.{n}")
                    await notifier.series_verdict(v, repeat_alert(v))
            elif "system" in doc:
                await notifier.system(system_alert(doc["system"], "from the runner"))
            print("ok", flush=True)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    anyio.run(main, Path(sys.argv[1]))
