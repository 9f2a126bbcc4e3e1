"""The console served by the agent: uvicorn on a socket bound before the DICOM listener
opens, run in the daemon's task group beside the live feed and the department view.

    web = start_web(cfg, notifier)          # None when ``web:`` is omitted
    if web: services.start_soon(web.run, name="web")

uvicorn's own signal handling is off (the daemon owns SIGTERM) and so is its logging setup
(the agent's log configuration stays). When the task group is cancelled, open connections
(event streams included) are closed within :data:`SHUTDOWN_S`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import uvicorn

from agent.alerts.notifier import Notifier
from agent.config import AgentConfig, WebConfig
from agent.errors import StartupError
from agent.operator.series_label import series_label
from agent.web.app import build_app
from agent.web.auth import LoginLimiter, Sessions
from agent.web.board import Board
from agent.web.context import KeyImages, WebContext
from agent.web.department import Department, DepartmentFeed
from agent.web.live import Hub
from agent.web.users import UserStore

log = logging.getLogger(__name__)

SHUTDOWN_S = 2.0
MAX_CONNECTIONS = 64
WEB_THREADS = 2  # key images and argon2 never take the worker threads the pipeline needs


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon handles SIGTERM and SIGINT and cancels us


class WebConsole:
    def __init__(self, cfg: AgentConfig, ctx: WebContext, sock: socket.socket) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.server = _Server(_uvicorn_config(ctx, cfg.web))

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.ctx.hub.watch, name="web-live")
            if self.cfg.mqtt is not None:
                feed = DepartmentFeed(self.cfg, self.ctx.department)
                tg.start_soon(feed.run, name="web-department")
            try:
                await self.server.serve(sockets=[self.sock])
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_S):
                    self.ctx.hub.close()  # ends every event stream
                    self.server.should_exit = True
                    await self.server.shutdown(sockets=[self.sock])
                raise
            finally:
                tg.cancel_scope.cancel()


def start_web(cfg: AgentConfig, notifier: Notifier) -> WebConsole | None:
    """Bind the console's socket (a port in use is a StartupError naming ``web.port``) and
    hook it to the notifier's alerts and commands."""
    web = cfg.web
    if web is None:
        return None
    sock = _bind(web)
    board = Board(cfg.storage_path / "journal.sqlite", series_label)
    ctx = WebContext(
        cfg=web, agent_id=cfg.agent_id, users=UserStore.for_storage(cfg.storage_path),
        sessions=Sessions(web.session_hours * 3600, secure=web.tls is not None),
        limiter=LoginLimiter(web.max_login_failures, web.login_lockout_s),
        board=board, hub=Hub(board), department=Department(), apply=notifier.command,
        key_images=_key_images(cfg.storage_path, cfg.triage.models_dir),
        has_broker=cfg.mqtt is not None, threads=anyio.CapacityLimiter(WEB_THREADS),
    )  # fmt: skip
    notifier.watchers.append(ctx.hub.alert)
    console = WebConsole(cfg, ctx, sock)
    scheme = "https" if web.tls else "http"
    log.info("web console listening on %s://%s:%d", scheme, web.bind, console.port)
    if not ctx.users.users():
        log.warning(
            "web console has no users yet: scanner-agent web-user add NAME --role technologist"
        )
    return console


def _bind(web: WebConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in web.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((web.bind, web.port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            [f"web.port {web.port}: cannot listen on {web.bind}: {exc.strerror}"]
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(ctx: WebContext, web: WebConfig | None) -> uvicorn.Config:
    assert web is not None
    tls = web.tls
    return uvicorn.Config(
        build_app(ctx), log_config=None, access_log=False, lifespan="off",
        limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=int(SHUTDOWN_S),
        h11_max_incomplete_event_size=16384, server_header=False,
        ssl_certfile=tls.cert_file if tls else None, ssl_keyfile=tls.key_file if tls else None,
        ssl_ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.ca_file else ssl.CERT_NONE,
    )  # fmt: skip


def _key_images(storage: Path, models_dir: Path | None) -> KeyImages:
    from agent.web.key_image import KeyImageRenderer  # the key-image renderer, numpy + Pillow

    return KeyImageRenderer(storage, models_dir)  # the site's models outline their findings
