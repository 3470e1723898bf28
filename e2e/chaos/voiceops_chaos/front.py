"""The front Service through the API server's service proxy, on a loopback port.

For a cluster whose Services this machine cannot reach: like ``kubectl proxy`` for
one Service. Each request goes to
``/api/v1/namespaces/NS/services/NAME:PORT/proxy/...`` with the kubeconfig's
credentials; the API server sends it to a ready endpoint of the Service at that
moment, so (unlike ``kubectl port-forward``, which holds one pod) traffic follows a
failover.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web
from voiceops_localcluster.node_agent import KubeClient

# Hop-by-hop and length headers: the forwarder's own connections set them.
SKIP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "content-length",
                "authorization", "content-encoding"}  # fmt: skip


@dataclass
class ServiceProxyFront:
    api: KubeClient
    namespace: str
    service: str
    port: str | int = "http"
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        path = (
            f"/api/v1/namespaces/{self.namespace}/services/{self.service}:{self.port}"
            f"/proxy{request.rel_url}"
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in SKIP_HEADERS}
        try:
            async with self.api.session.request(
                request.method,
                self.api.server + path,
                data=await request.read(),
                headers=headers,
                ssl=self.api.ssl,
                timeout=aiohttp.ClientTimeout(total=120),
            ) as upstream:
                body = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in SKIP_HEADERS}
                return web.Response(status=upstream.status, body=body, headers=out)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return web.Response(status=502, text=f"service proxy: {error!r}")
