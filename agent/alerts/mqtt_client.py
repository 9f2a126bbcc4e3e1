"""aiomqtt's client with one race closed: a write watch for a socket paho already closed.

paho asks for a write watch from whatever thread is sending; aiomqtt (2.5) hands
``loop.add_writer(fd, ...)`` to the event loop with ``call_soon_threadsafe``. When the
broker goes away in between, the loop runs it on a closed descriptor: ``OSError: [Errno 9]``
escapes into the loop's exception handler (a stray error log in the daemon, a failed test
under anyio's runner), or, worse, it watches whichever socket the OS gave that number next.
Here the watch is added only if it is still paho's open socket, closing drops both
watches, and removing a watch from a socket that is already closed is a no-op.

This overrides two private hooks of aiomqtt.Client, so pyproject pins aiomqtt below 2.6;
``tests/alerts/test_mqtt_client_race.py`` fails if a new release changes their shape.
"""

from __future__ import annotations

import logging
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

log = logging.getLogger(__name__)


class GuardedClient(aiomqtt.Client):
    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def writable() -> None:
            # A failed write means the connection broke: end the session, as aiomqtt does.
            try:
                client.loop_write()
            except Exception as exc:
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def watch() -> None:
            now = client.socket()
            if now is None or now is not sock or now.fileno() != fd:
                return  # closed (and maybe reused) since paho asked
            try:
                self._loop.add_writer(fd, writable)
            except (OSError, ValueError) as exc:
                log.debug("MQTT write watch on a closing socket skipped: %s", exc)

        self._loop.call_soon_threadsafe(watch)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:  # -1: closed, and its watch went with _on_socket_close
            self._loop.remove_writer(fd)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        super()._on_socket_close(client, userdata, sock)
        if fd >= 0:  # aiomqtt drops only the read watch
            self._loop.remove_writer(fd)
