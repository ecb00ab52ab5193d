"""A tiny HTTP proxy that injects faults in front of a server: ``python faulty_proxy.py PORT UPSTREAM``.

``POST /_faults {"status": 429, "count": 2}`` answers the next 2 requests with that status (an AWS
style JSON/XML error body by content type); ``{"delay": 3, "count": 1}`` holds the next request
that long before forwarding. Everything else is forwarded to UPSTREAM unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import aiohttp
import aiohttp.web

HOP = {"host", "content-length", "transfer-encoding", "connection"}


def make_app(upstream: str) -> aiohttp.web.Application:
    faults: list[dict[str, Any]] = []
    app = aiohttp.web.Application()

    async def control(request: aiohttp.web.Request) -> aiohttp.web.Response:
        faults.append(await request.json())
        return aiohttp.web.json_response({"faults": len(faults)})

    async def forward(request: aiohttp.web.Request) -> aiohttp.web.Response:
        for fault in faults:
            if fault["count"] > 0:
                fault["count"] -= 1
                if "delay" in fault:
                    await asyncio.sleep(fault["delay"])
                    break
                status = fault["status"]
                code = "ThrottlingException" if status == 429 else "ServiceException"
                body = {"__type": code, "message": "injected", "Message": "injected"}
                return aiohttp.web.json_response(body, status=status, headers={"x-amzn-ErrorType": code})
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, upstream + request.path_qs, data=body, headers=headers) as answer,
        ):
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP | {"content-encoding"}}
            return aiohttp.web.Response(status=answer.status, body=payload, headers=out)

    app.router.add_post("/_faults", control)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        aiohttp.web.run_app(make_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), print=None)
