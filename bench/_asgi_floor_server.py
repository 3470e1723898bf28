"""The floor for serving espeak over HTTP from Python: the least a server can do.

A bare ASGI app on the same uvicorn (uvloop + httptools) as voiceops-service:
read the JSON body, run the engine's 16-bit PCM call in one worker thread,
answer. No validation, admission, deadline, cancellation, metrics or error
envelope. bench/service_espeak.py runs it beside the real service so a report
can tell this machine's cost of "HTTP + a worker thread" from the service's
own. Not a product: never deploy it.

    python bench/_asgi_floor_server.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from starlette.types import Receive, Scope, Send
from voiceops_service.engines.base import SynthesisRequest
from voiceops_service.engines.espeak import EspeakEngine


def build_app() -> object:
    engine = EspeakEngine()
    engine.load()
    engine.warm_up()
    worker = ThreadPoolExecutor(max_workers=1)

    def speak(text: str) -> bytes:
        return engine.synthesize_pcm16(SynthesisRequest(text=text))

    async def respond(send: Send, status: int, body: bytes, media: bytes) -> None:
        headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":  # readiness for the bench's start-up poll
            await respond(send, 200, b"ok", b"text/plain")
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        text = json.loads(b"".join(parts))["input"]
        pcm = await asyncio.get_running_loop().run_in_executor(worker, speak, text)
        await respond(send, 200, pcm, b"audio/pcm")

    return app


if __name__ == "__main__":
    uvicorn.run(build_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
