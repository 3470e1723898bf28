"""Client-disconnect detection and the chunked audio response.

A request's handler task is cancelled when its client goes away (the ASGI
``http.disconnect`` message), so queued work is dropped and a running engine
call's result is discarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)


class ClientDisconnectedError(Exception):
    """The client closed the connection before the answer was ready."""


@asynccontextmanager
async def cancel_on_disconnect(receive: Receive) -> AsyncIterator[None]:
    """Cancel the current task if the client disconnects inside the block.

    Only use after the request body has been read: this consumes ``receive``.
    """
    task = asyncio.current_task()
    assert task is not None
    disconnected = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
                task.cancel()
                return

    watcher = asyncio.create_task(watch(), name="disconnect-watcher")
    try:
        yield
    except asyncio.CancelledError:
        if disconnected.is_set():
            task.uncancel()
            raise ClientDisconnectedError from None
        raise
    finally:
        # No await before this: the watcher cannot fire once the block is left.
        watcher.cancel()


StreamOutcome = str  # "complete" | "disconnected" | "error"


class AudioStream(StreamingResponse):
    """Chunked audio: sends each produced chunk as soon as it exists.

    ``on_close(outcome)`` always runs (it releases the admission slot), whether
    the stream completed, the client left, or production failed; a failure
    after the headers went out aborts the connection so the client sees a
    truncated transfer rather than a silently short file.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        on_close: Callable[[StreamOutcome], Awaitable[None]],
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(chunks, status_code=200, headers=headers, media_type=media_type)
        self._chunks = chunks
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome: StreamOutcome = "error"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with cancel_on_disconnect(receive):
                async for chunk in self._chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            outcome = "complete"
        except ClientDisconnectedError:
            outcome = "disconnected"
        finally:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._on_close(outcome)
