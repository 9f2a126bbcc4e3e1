"""The console's Starlette application: pages, login and logout, security headers.

Pages are Jinja2 templates with autoescaping on, and every string that came from DICOM or
MQTT reaches the browser either through them or as JSON that the page's script writes with
``textContent``; nothing is ever written as HTML. Scripts, styles and the alert tone are the
package's own (``agent/web/static``), no CDN, and the Content-Security-Policy allows nothing
else.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.web.api import api_routes
from agent.web.auth import COOKIE, csrf_ok
from agent.web.context import UID_RE, WebContext, who
from agent.web.users import User

log = logging.getLogger(__name__)

MAX_LOGIN_BODY = 8192
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("agent.web", "templates"),
    autoescape=True,  # every {{ }} is HTML-escaped: names and descriptions come from DICOM
    undefined=jinja2.StrictUndefined,
)
_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]  # fmt: skip


def build_app(ctx: WebContext) -> Starlette:
    routes = [
        Route("/", index),
        Route("/series/{uid}", series_page),
        Route("/department", department_page),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *api_routes(),
        Mount("/static", StaticFiles(packages=[("agent.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.ctx = ctx
    app.add_middleware(SecurityHeaders)
    return app


class SecurityHeaders:
    """Pure ASGI (it must not buffer the event stream): the same headers on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    ctx: WebContext = request.app.state.ctx
    html = _TEMPLATES.get_template(name).render(agent_id=ctx.agent_id, **values)
    return HTMLResponse(html, status_code=status)


def _page(request: Request, name: str, **values: Any) -> Response:
    found = who(request)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    session, user = found
    ctx: WebContext = request.app.state.ctx
    return render(
        request, name, user=user.name, role=user.role, csrf=session.csrf,
        may_decide=user.may("release"), sound=ctx.cfg.sound, **values,
    )  # fmt: skip


async def index(request: Request) -> Response:
    return _page(request, "index.html", page="series")


async def series_page(request: Request) -> Response:
    uid = request.path_params["uid"]
    if not UID_RE.fullmatch(uid):
        return Response("no such series", status_code=404, media_type="text/plain")
    return _page(request, "series.html", page="one", series_uid=uid)


async def department_page(request: Request) -> Response:
    return _page(request, "department.html", page="department")


async def login_page(request: Request) -> Response:
    if who(request) is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "login.html", error="")


async def login(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return render(request, "login.html", 403, error="log in from this console's own page")
    form = await small_form(request, MAX_LOGIN_BODY)
    if form is None:
        return render(request, "login.html", 400, error="send the login form (at most 8 KiB)")
    name, password = form.get("username", ""), form.get("password", "")
    address = request.client.host if request.client else "?"
    keys = (f"user:{name[:64]}", f"addr:{address}")
    wait = ctx.limiter.blocked_for(*keys)
    if wait > 0:
        log.warning(
            "web login refused for %s from %s: too many failures", ascii(name[:64]), address
        )
        refused = render(request, "login.html", 429, error="too many failed logins; wait a minute")
        refused.headers["retry-after"] = str(int(wait) + 1)
        return refused
    user = await _verify(ctx, name, password)
    if user is None:
        ctx.limiter.failed(*keys)
        log.warning("web login failed for %s from %s", ascii(name[:64]), address)
        return render(request, "login.html", 401, error="wrong name or password")
    ctx.limiter.succeeded(keys[0])
    _, cookie = ctx.sessions.create(user.name)
    log.info("web login: %s (%s) from %s", user.name, user.role, address)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE, cookie, max_age=int(ctx.sessions.max_age_s), httponly=True, samesite="strict",
        secure=ctx.sessions.secure, path="/",
    )  # fmt: skip
    return response


async def small_form(request: Request, limit: int) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body of at most ``limit`` bytes, read in
    bounded memory whatever Content-Length says; None for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


async def _verify(ctx: WebContext, name: str, password: str) -> User | None:
    # argon2 costs ~50 ms of CPU on purpose: in the console's own threads, not the pipeline's
    return await anyio.to_thread.run_sync(ctx.users.verify, name, password, limiter=ctx.threads)


async def logout(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    found = who(request)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    session, _ = found
    form = await small_form(request, 1024)
    if form is None or not csrf_ok(session, form.get("csrf")):
        return Response("missing or wrong CSRF token", status_code=403, media_type="text/plain")
    ctx.sessions.end(session)
    ctx.hub.close(session.sid)  # its open pages' event streams end with it
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
