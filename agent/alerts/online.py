"""When the agent may say "online": only once its DICOM listener is open.

The daemon warms its kernels before it listens (a minute on a cold cache); a console or a
monitor that reads "online" must be able to send at once. The publishers hold their
"online" status until :meth:`OnlineGate.open` is called; where nothing holds it (the tests'
notifiers, tools) the gate starts open.
"""

from __future__ import annotations

import anyio


class OnlineGate:
    def __init__(self, is_open: bool = True) -> None:
        self._open = is_open
        self._event: anyio.Event | None = None

    def open(self) -> None:
        """The listener is open (call it on the event loop)."""
        self._open = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._open:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()
