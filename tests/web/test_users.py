"""Web accounts and the login limiter, on their own: argon2 hashes in a 0600 file, names
checked, and lockouts that count per name and (more loosely) per address."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.web.auth import LoginLimiter, Sessions, csrf_ok
from agent.web.users import UserError, UserStore


def test_accounts_are_argon2_hashes_in_a_private_file(tmp_path: Path) -> None:
    store = UserStore.for_storage(tmp_path)
    store.add("jdoe", "technologist", "correct horse")
    doc = json.loads(store.path.read_text())
    assert doc["jdoe"]["role"] == "technologist"
    assert doc["jdoe"]["hash"].startswith("$argon2id$")
    assert "correct horse" not in store.path.read_text()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    user = store.verify("jdoe", "correct horse")
    assert user is not None and user.may("release") and user.may("repeat")
    assert store.verify("jdoe", "wrong horse") is None
    assert store.verify("nobody", "correct horse") is None
    assert store.verify("jdoe", "x" * 5000) is None


def test_roles_and_bad_input_are_refused(tmp_path: Path) -> None:
    store = UserStore.for_storage(tmp_path)
    rad = store.add("dr.who@ward-3", "radiologist", "long enough")
    assert not rad.may("release") and not rad.may("hold")
    assert store.add("root", "admin", "long enough").may("hold")
    for name, role, password, message in [
        ("bad name", "admin", "long enough", "must be 1 to 64"),
        ("<script>", "admin", "long enough", "must be 1 to 64"),
        ("x", "superuser", "long enough", "must be one of"),
        ("x", "admin", "short", "8 to 1024"),
        ("root", "admin", "long enough", "exists"),
    ]:
        with pytest.raises(UserError, match=message):
            store.add(name, role, password)
    store.remove("root")
    assert set(store.users()) == {"dr.who@ward-3"}
    with pytest.raises(UserError, match="no web user"):
        store.remove("root")


def test_the_limiter_locks_a_name_after_its_failures(tmp_path: Path) -> None:
    limiter = LoginLimiter(max_failures=3, window_s=60)
    for _ in range(3):
        assert limiter.blocked_for("user:a", "addr:1") == 0
        limiter.failed("user:a", "addr:1")
    assert limiter.blocked_for("user:a", "addr:1") > 0
    assert limiter.blocked_for("user:b", "addr:1") == 0, "the address allows 5x as many"
    for _ in range(12):
        limiter.failed("user:c", "addr:1")
    assert limiter.blocked_for("user:b", "addr:1") > 0, "now the address is locked too"


def test_sessions_are_signed_and_end() -> None:
    sessions = Sessions(3600, secure=False)
    session, cookie = sessions.create("jdoe")
    assert sessions.find(cookie) is session
    assert sessions.find(cookie[:-2] + ("aa" if not cookie.endswith("aa") else "bb")) is None
    assert sessions.find(session.sid) is None, "an unsigned id is not a session"
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, None)
    assert not csrf_ok(session, session.csrf[:-1])
    sessions.end(session)
    assert sessions.find(cookie) is None
