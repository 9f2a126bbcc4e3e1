"""The console's JSON API; every route answers 401 without a session.

    GET  /api/series                    a JSON list of Verdicts (the journal's state now)
    GET  /api/series/<uid>              one, with its audit trail
    GET  /api/series/<uid>/key-image    PNG of the slice that drove the verdict (404: none)
    GET  /api/series/<uid>/strip        PNG thumbnail strip, flagged slices marked
    POST /api/series/<uid>/<action>     release | hold | repeat; header X-CSRF-Token
    GET  /api/events                    text/event-stream: ``series`` lists and ``alert``s
    GET  /api/department                every agent under this broker prefix
    GET  /api/me                        the logged-in user and role

A command is applied by the agent's own command path (the one MQTT commands take), so it
is audited in the journal with the user's name (``<name> (web)``), and the answer is the
journal's: ``applied`` false with ``refused: already forwarded`` when it was refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent.domain.commands import ACTIONS, Command, Outcome
from agent.operator.series_label import series_label
from agent.web.auth import csrf_ok
from agent.web.context import UID_RE, WebContext, who

WEB_SUFFIX = " (web)"  # in the audit: which door the command came through
_FINAL = {"released", "forwarded", "quarantined"}


def api_routes() -> list[Route]:
    return [
        Route("/api/series", list_series),
        Route("/api/series/{uid}", one_series),
        Route("/api/series/{uid}/key-image", key_image),
        Route("/api/series/{uid}/strip", strip),
        Route("/api/series/{uid}/{action}", command, methods=["POST"]),
        Route("/api/events", events),
        Route("/api/department", department),
        Route("/api/me", me),
    ]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


UNAUTHORIZED = {"error": "log in first: POST /login with username and password"}


async def list_series(request: Request) -> Response:
    if who(request) is None:
        return JSONResponse(UNAUTHORIZED, status_code=401)
    ctx: WebContext = request.app.state.ctx
    return JSONResponse(await anyio.to_thread.run_sync(ctx.board.series))


async def one_series(request: Request) -> Response:
    if who(request) is None:
        return JSONResponse(UNAUTHORIZED, status_code=401)
    ctx: WebContext = request.app.state.ctx
    uid = request.path_params["uid"]
    row = await anyio.to_thread.run_sync(ctx.board.one, uid) if UID_RE.fullmatch(uid) else None
    if row is None:
        return _error(404, "no such series in the journal")
    row["audit"] = await anyio.to_thread.run_sync(ctx.board.audit, uid)
    return JSONResponse(row)


async def key_image(request: Request) -> Response:
    return await _png(request, lambda ctx: ctx.key_images.key_image)


async def strip(request: Request) -> Response:
    return await _png(request, lambda ctx: ctx.key_images.strip)


async def _png(
    request: Request, pick: Callable[[WebContext], Callable[[str], bytes | None]]
) -> Response:
    if who(request) is None:
        return JSONResponse(UNAUTHORIZED, status_code=401)
    ctx: WebContext = request.app.state.ctx
    uid = request.path_params["uid"]
    if not UID_RE.fullmatch(uid):
        return _error(404, "no image for this series")
    png = await anyio.to_thread.run_sync(pick(ctx), uid, limiter=ctx.threads)
    if png is None:
        return _error(404, "no image for this series")
    return Response(png, media_type="image/png")


async def command(request: Request) -> Response:
    found = who(request)
    if found is None:
        return JSONResponse(UNAUTHORIZED, status_code=401)
    session, user = found
    if not csrf_ok(session, request.headers.get("x-csrf-token")):
        return _error(403, "missing or wrong CSRF token (header X-CSRF-Token)")
    ctx: WebContext = request.app.state.ctx
    uid, name = request.path_params["uid"], request.path_params["action"]
    action = next((a for a in ACTIONS if a == name), None)
    if action is None:
        return _error(404, f"unknown action; expected one of {', '.join(ACTIONS)}")
    if not user.may(action):
        return _error(403, f"a {user.role} may not {action} a series")
    if not UID_RE.fullmatch(uid) or await anyio.to_thread.run_sync(ctx.board.one, uid) is None:
        return _error(404, "no such series in the journal")
    outcome = await ctx.apply(Command(action, uid, user.name + WEB_SUFFIX))
    await ctx.hub.refresh()  # every open page shows the new state now, not at the next poll
    return JSONResponse(answer(outcome), status_code=200 if outcome and outcome.applied else 409)


def answer(outcome: Outcome | None) -> dict[str, Any]:
    """What the page shows: the journal's answer, in the technologist's words."""
    if outcome is None:
        return {"applied": False, "message": "refused: the agent did not accept the command"}
    if not outcome.applied:
        why = f"already {outcome.from_state}" if outcome.from_state in _FINAL else outcome.message
        return {"applied": False, "message": f"refused: {why}", "state": outcome.from_state}
    return {"applied": True, "message": outcome.message, "state": outcome.to_state}


async def events(request: Request) -> Response:
    found = who(request)
    if found is None:
        return JSONResponse(UNAUTHORIZED, status_code=401)
    ctx: WebContext = request.app.state.ctx
    rx = ctx.hub.open_stream(found[0].sid)
    if rx is None:
        return _error(503, "too many open console pages")
    headers = {"x-accel-buffering": "no"}
    body = ctx.hub.events(rx, lambda: who(request) is not None)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def department(request: Request) -> Response:
    if who(request) is None:
        return JSONResponse(UNAUTHORIZED, status_code=401)
    ctx: WebContext = request.app.state.ctx
    if ctx.has_broker:
        agents = ctx.department.summaries()
        link = ctx.department.link
    else:  # no broker: this agent alone, from its journal
        rows = ctx.hub.series
        held = [r for r in rows if r.get("state") == "held"]
        agents = [{
            "agent_id": ctx.agent_id, "state": "online", "scanner": "", "since": None,
            "last_series": rows[0] if rows else None, "open_alerts": len(held), "open": held[:5],
            "series": len(rows),
        }]  # fmt: skip
        link = "no broker: this agent only"
    agents = [
        {**a, "last_series": _labelled(a["last_series"]), "open": [_labelled(o) for o in a["open"]]}
        for a in agents
    ]
    return JSONResponse({"link": link, "agents": agents})


def _labelled(series: Any) -> Any:
    return {**series, "label": series_label(series)} if isinstance(series, dict) else None


async def me(request: Request) -> Response:
    found = who(request)
    if found is None:
        return JSONResponse(UNAUTHORIZED, status_code=401)
    session, user = found
    return JSONResponse({"name": user.name, "role": user.role, "csrf": session.csrf})
