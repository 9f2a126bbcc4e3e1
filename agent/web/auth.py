"""Sessions, CSRF tokens and the login rate limit of the web console.

A login makes a server-side session (so logging out, or removing the account, ends it at
once) named by a random id. The cookie carries that id signed with a secret made at start
(itsdangerous), ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
sends it) and ``Secure`` under TLS. Every state-changing request must also carry the
session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf``); pages read it from
their own HTML. Sessions live in memory: after a restart everyone logs in again.

Failed logins are counted per name and per client address; past ``web.max_login_failures``
for a name (and :data:`ADDRESS_FACTOR` times that for an address, which a ward's shared
screens and a proxy have in common) within ``web.login_lockout_s``, further attempts are
refused (429) until that much time passed, whether the password is right or not.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

COOKIE = "scanner_agent_session"
MAX_SESSIONS = 1000  # past this the oldest is ended; a console has a handful of users
MAX_TRACKED = 10_000  # login-failure counters kept (names and addresses together)
ADDRESS_FACTOR = 5


@dataclass(slots=True)
class Session:
    sid: str
    user: str
    csrf: str
    expires: float


class Sessions:
    def __init__(self, max_age_s: float, *, secure: bool) -> None:
        self.max_age_s = max_age_s
        self.secure = secure
        self._signer = TimestampSigner(secrets.token_bytes(32), salt="scanner-agent-web")
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: str) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session = Session(
            secrets.token_urlsafe(24), user, secrets.token_urlsafe(24), time.time() + self.max_age_s
        )
        self._sessions[session.sid] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session, self._signer.sign(session.sid).decode()

    def find(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 256:
            return None
        try:
            sid = self._signer.unsign(cookie, max_age=int(self.max_age_s)).decode()
        except (BadSignature, SignatureExpired, UnicodeDecodeError):
            return None
        session = self._sessions.get(sid)
        if session is None or session.expires < time.time():
            self._sessions.pop(sid, None)
            return None
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)

    def end_user(self, user: str) -> None:
        for sid in [s.sid for s in self._sessions.values() if s.user == user]:
            del self._sessions[sid]


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


class LoginLimiter:
    """Failed logins per key (``user:<name>``, ``addr:<ip>``) inside a sliding window."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def blocked_for(self, *keys: str) -> float:
        """Seconds until a login under any of ``keys`` may be tried again; 0: now."""
        now = time.time()
        wait = 0.0
        for key in keys:
            recent = self._recent(key, now)
            if len(recent) >= self._limit(key):
                wait = max(wait, recent[-self._limit(key)] + self.window_s - now)
        return wait

    def _limit(self, key: str) -> int:
        return self.max_failures * (ADDRESS_FACTOR if key.startswith("addr:") else 1)

    def failed(self, *keys: str) -> None:
        now = time.time()
        for key in keys:
            self._failures[key] = [*self._recent(key, now), now][-self._limit(key) :]
            self._failures.move_to_end(key)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._failures.get(key, []) if t > now - self.window_s]
