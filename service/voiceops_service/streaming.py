"""Client-disconnect detection and the audio responses (whole, in parts, or chunked).

A request's handler task is cancelled when its client goes away (the ASGI
``http.disconnect`` message), so queued work is dropped and a running engine
call's result is discarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from starlette.responses import Response, StreamingResponse
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


class AudioResponse(Response):
    """A whole answer with a Content-Length, sent as the parts it was made in.

    The parts are the wav header and one PCM part per chunk: joining them into
    one body would copy the whole answer (0.5 MB for 11 s of audio) once more.
    """

    def __init__(
        self, parts: Sequence[bytes], media_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.parts = [part for part in parts if part]
        length = str(sum(len(part) for part in self.parts))
        super().__init__(None, 200, {**(headers or {}), "Content-Length": length}, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        last = len(self.parts) - 1
        for index, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})
        if not self.parts:
            await send({"type": "http.response.body", "body": b""})


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
