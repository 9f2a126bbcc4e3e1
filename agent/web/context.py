"""What every request handler of the console shares, and who is asking."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from anyio import CapacityLimiter
from starlette.requests import Request

from agent.config import WebConfig
from agent.domain.commands import Command, Outcome
from agent.web.auth import COOKIE, LoginLimiter, Session, Sessions
from agent.web.board import Board
from agent.web.department import Department
from agent.web.live import Hub
from agent.web.users import User, UserStore

UID_RE = re.compile(r"[0-9.]{1,64}")  # a DICOM UID; anything else names no series

ApplyCommand = Callable[[Command], Awaitable[Outcome | None]]


class KeyImages(Protocol):
    """:class:`agent.web.key_image.KeyImageRenderer`: PNG bytes, None where there is none.
    Blocking (reads DICOM, renders): called in a worker thread."""

    def key_image(self, series_uid: str) -> bytes | None: ...

    def strip(self, series_uid: str) -> bytes | None: ...


@dataclass
class WebContext:
    cfg: WebConfig
    agent_id: str
    users: UserStore
    sessions: Sessions
    limiter: LoginLimiter
    board: Board
    hub: Hub
    department: Department
    apply: ApplyCommand
    key_images: KeyImages
    has_broker: bool
    threads: CapacityLimiter  # key images and password hashes: at most this many at once


def who(request: Request) -> tuple[Session, User] | None:
    """The request's session and its account, None without a valid one. A session whose
    account was removed (``web-user remove``) ends here."""
    ctx: WebContext = request.app.state.ctx
    session = ctx.sessions.find(request.cookies.get(COOKIE))
    if session is None:
        return None
    user = ctx.users.get(session.user)
    if user is None:
        ctx.sessions.end_user(session.user)
        return None
    return session, user
