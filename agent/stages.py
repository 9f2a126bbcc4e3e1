"""The stage: the one core abstraction of the pipeline.

A stage takes items from a bounded inbox and puts results in a bounded outbox. One-in,
one-out stages are plain async functions wrapped by :func:`run_stage`; stateful stages
(the series assembler) own their loop. Closing a stage's inbox drains it in order and
then closes its outbox, so closing the receiver drains the whole pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

from anyio.abc import ObjectReceiveStream, ObjectSendStream

from agent.journal.space import JournalFull

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


async def run_stage(
    name: str,
    fn: Callable[[In], Awaitable[Out | None]],
    inbox: ObjectReceiveStream[In],
    outbox: ObjectSendStream[Out] | None = None,
) -> None:
    """Apply ``fn`` to each item in order. A failing item is logged and passed over,
    never allowed to stop the stage: the journal still holds it for recovery."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(inbox)
        if outbox is not None:
            await stack.enter_async_context(outbox)
        async for item in inbox:
            try:
                result = await _until_written(fn, item)
            except Exception:
                log.exception("stage %s failed on %r", name, item)
                continue
            if result is not None and outbox is not None:
                await outbox.send(result)
    log.debug("stage %s drained", name)


async def _until_written(fn: Callable[[In], Awaitable[Out | None]], item: In) -> Out | None:
    """``fn(item)``, done again after a full-journal pause: the stage's work is not dropped."""
    while True:
        try:
            return await fn(item)
        except JournalFull as exc:
            log.warning("stage waits for disk space: %s", exc)
            await exc.space.resumed()
