"""The judge waits for a series' images still in per-image work, and not for ever."""

from __future__ import annotations

import threading
import time

from agent.verdict.in_flight import InFlight


def test_wait_returns_when_the_last_image_is_done() -> None:
    flight = InFlight()
    flight.started("s1")
    flight.started("s1")
    flight.started("s2")
    done: list[bool] = []
    waiter = threading.Thread(target=lambda: done.append(flight.wait("s1", timeout=30)))
    waiter.start()
    flight.done("s1")
    assert flight.pending("s1") == 1
    flight.done("s1")
    waiter.join(30)
    assert done == [True]
    assert flight.pending("s2") == 1, "another series' images are counted apart"


def test_wait_gives_up_on_a_stuck_worker() -> None:
    flight = InFlight()
    flight.started("s1")
    t0 = time.monotonic()
    assert flight.wait("s1", timeout=0.05) is False
    assert time.monotonic() - t0 < 30  # bounded, not a timing claim
    assert flight.wait("never-started", timeout=0) is True
