"""The web console's API against a running agent: sessions, CSRF, roles, the journal's
answers, the live event stream and the key image. One agent (QC on, a real ring series
held) serves every test in this module; each test logs in on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread

from tests.support.agent_proc import AgentProcess
from tests.support.peers import storescu
from tests.support.qc_series import write_series
from tests.support.web import (
    PASSWORDS,
    add_users,
    client,
    login,
    wait_for_series,
    web_overrides,
    web_user,
)  # fmt: skip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path_factory.mktemp("web-agent"), **web_overrides())
    add_users(proc)
    proc.start()
    yield proc
    proc.stop()


def held_series(agent: AgentProcess, folder: Path) -> str:
    """Send a ring-artifact head CT (4 slices) and wait until QC holds it."""
    files = write_series(folder, "ring", 3, n=4)
    uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    storescu(agent.port, files)
    agent.wait_for("SELECT state FROM series WHERE series_uid = ?",
                   lambda r: bool(r) and r[0][0] == "held", 90, uid)  # fmt: skip
    return uid


def state_of(agent: AgentProcess, uid: str) -> str:
    return str(agent.query("SELECT state FROM series WHERE series_uid = ?", uid)[0][0])


def test_everything_but_the_login_page_needs_a_session(agent: AgentProcess) -> None:
    http = client(agent)
    for path in ("/api/series", "/api/series/1.2.3", "/api/series/1.2.3/key-image",
                 "/api/series/1.2.3/strip", "/api/events", "/api/department", "/api/me"):  # fmt: skip
        assert http.get(path).status_code == 401, path
    assert http.post("/api/series/1.2.3/release").status_code == 401
    page = http.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert http.get("/login").status_code == 200
    forged = client(agent)
    forged.cookies.set("scanner_agent_session", "tech.aaaa.bbbb")
    assert forged.get("/api/series").status_code == 401


def test_a_wrong_password_gets_no_session(agent: AgentProcess) -> None:
    http = client(agent)
    answer = http.post("/login", data={"username": "tech", "password": "not-the-password"})
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    assert "wrong name or password" in answer.text
    assert http.get("/api/series").status_code == 401
    unknown = http.post("/login", data={"username": "nobody", "password": "whatever1"})
    assert unknown.status_code == 401 and "set-cookie" not in unknown.headers
    huge = http.post("/login", data={"username": "tech", "password": "x" * 9000})
    assert huge.status_code == 400 and "set-cookie" not in huge.headers
    as_json = http.post("/login", json={"username": "tech", "password": PASSWORDS["tech"]})
    assert as_json.status_code == 400 and "set-cookie" not in as_json.headers
    other_site = http.post("/login", data={"username": "tech", "password": PASSWORDS["tech"]},
                           headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
    assert other_site.status_code == 403 and "set-cookie" not in other_site.headers


def test_the_session_cookie_is_httponly_strict_and_logout_ends_it(agent: AgentProcess) -> None:
    http = client(agent)
    answer = http.post("/login", data={"username": "tech", "password": PASSWORDS["tech"]})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie, cookie
    csrf = http.get("/api/me").json()["csrf"]
    stolen = dict(http.cookies)
    with http.stream("GET", "/api/events") as stream:  # a page left open while logging out
        lines = stream.iter_lines()
        assert next(lines) == "event: series"
        assert http.post("/logout", data={}).status_code == 403, "logout needs the CSRF token"
        assert http.post("/logout", data={"csrf": csrf}).status_code == 303
        list(lines)  # the stream ends with its session
    replay = client(agent)
    replay.cookies.update(stolen)
    assert replay.get("/api/series").status_code == 401, "a logged-out session is gone"


def test_failed_logins_are_rate_limited(agent: AgentProcess) -> None:
    assert web_user(agent, "add", "locked", "technologist", "locked-password-1").returncode == 0
    http = client(agent)
    for _ in range(5):
        assert (
            http.post("/login", data={"username": "locked", "password": "guess-1234"}).status_code
            == 401
        )
    answer = http.post("/login", data={"username": "locked", "password": "locked-password-1"})
    assert answer.status_code == 429, "even the right password waits out the lockout"
    assert int(answer.headers["retry-after"]) > 0
    assert "set-cookie" not in answer.headers
    assert login(agent, "tech")[0].get("/api/series").status_code == 200, "others still log in"


def test_series_list_missing_csrf_roles_and_the_journals_answer(
    agent: AgentProcess, tmp_path: Path
) -> None:
    uid = held_series(agent, tmp_path / "ring")
    tech, csrf = login(agent, "tech")
    rows = wait_for_series(tech, lambda rows: any(r["series_uid"] == uid and r["qc"] for r in rows))
    row = next(r for r in rows if r["series_uid"] == uid)
    assert row["schema"] == "scanner-agent.verdict/1"
    assert (row["state"], row["qc"]["status"], row["label"]) == ("held", "fail", "HEAD RING")
    assert any(r["code"] == "ring_hu" for r in row["qc"]["reasons"])

    assert tech.post(f"/api/series/{uid}/release").status_code == 403, "no CSRF token"
    wrong = tech.post(f"/api/series/{uid}/release", headers={"X-CSRF-Token": "x" * 32})
    assert wrong.status_code == 403
    rad, rad_csrf = login(agent, "rad")
    refused = rad.post(f"/api/series/{uid}/release", headers={"X-CSRF-Token": rad_csrf})
    assert refused.status_code == 403 and "radiologist may not release" in refused.json()["error"]
    assert rad.get("/api/series").status_code == 200, "a radiologist may look"
    assert state_of(agent, uid) == "held"

    released = tech.post(f"/api/series/{uid}/release", headers={"X-CSRF-Token": csrf})
    assert released.status_code == 200, released.text
    assert released.json()["applied"] is True and released.json()["state"] == "released"
    agent.wait_for("SELECT state FROM series WHERE series_uid = ?",
                   lambda r: r[0][0] == "forwarded", 60, uid)  # fmt: skip
    late = tech.post(f"/api/series/{uid}/hold", headers={"X-CSRF-Token": csrf})
    assert late.status_code == 409
    assert late.json() == {"applied": False, "message": "refused: already forwarded",
                           "state": "forwarded"}  # fmt: skip
    audit = agent.query(
        "SELECT who, action, from_state, to_state, applied FROM series_audit"
        " WHERE series_uid = ? ORDER BY id", uid,
    )  # fmt: skip
    assert [tuple(a) for a in audit] == [
        ("tech (web)", "release", "held", "released", 1),
        ("tech (web)", "hold", "forwarded", "forwarded", 0),
    ]
    trail = tech.get(f"/api/series/{uid}").json()["audit"]
    assert [a["who"] for a in trail] == ["tech (web)", "tech (web)"]


def test_the_key_image_and_strip_are_pngs(agent: AgentProcess, tmp_path: Path) -> None:
    uid = held_series(agent, tmp_path / "ring")
    http, _ = login(agent, "rad")
    for what in ("key-image", "strip"):
        png = http.get(f"/api/series/{uid}/{what}")
        assert png.status_code == 200, what
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert http.get("/api/series/1.2.3.999/key-image").status_code == 404
    assert http.get("/api/series/not-a-uid/key-image").status_code == 404


def test_the_event_stream_follows_the_journal(agent: AgentProcess, tmp_path: Path) -> None:
    """The whole list first, then only the rows that changed; merged, they show the series
    go from held to forwarded as the journal does."""
    http, csrf = login(agent, "admin")
    files = write_series(tmp_path / "ring", "ring", 3, n=4)
    uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    rows: dict[str, dict[str, Any]] = {}
    seen: list[str] = []
    events: list[str] = []
    with http.stream("GET", "/api/events", timeout=httpx.Timeout(120)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = ""
        released = False
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                continue
            if not line.startswith("data: ") or event not in ("series", "rows"):
                continue
            doc = json.loads(line.removeprefix("data: "))
            events.append(event)
            if event == "series":
                rows = {r["series_uid"]: r for r in doc}
                storescu(agent.port, files)
            else:
                rows.update({r["series_uid"]: r for r in doc["changed"]})
                assert len(doc["changed"]) < len(rows) or len(rows) <= 1, "only what changed"
            seen.append(rows[uid]["state"] if uid in rows else "-")
            if seen[-1] == "held" and not released:
                answer = http.post(f"/api/series/{uid}/release", headers={"X-CSRF-Token": csrf})
                released = answer.status_code == 200
            elif seen[-1] == "forwarded":
                break
    assert events[0] == "series" and set(events[1:]) == {"rows"}, events
    assert "held" in seen and seen[-1] == "forwarded", seen
    assert rows[uid]["delivery"] == "delivered", rows[uid]


def test_a_removed_account_loses_its_session(agent: AgentProcess) -> None:
    assert web_user(agent, "add", "temp", "radiologist", "temp-password-1").returncode == 0
    http = client(agent)
    assert (
        http.post("/login", data={"username": "temp", "password": "temp-password-1"}).status_code
        == 303
    )
    assert http.get("/api/series").status_code == 200
    assert web_user(agent, "remove", "temp").returncode == 0
    assert http.get("/api/series").status_code == 401
    listed = web_user(agent, "list", "-")
    assert "tech" in listed.stdout and "temp" not in listed.stdout
