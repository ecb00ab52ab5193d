"""A tiny HTTP(S) proxy that injects faults in front of a server.

``python faulty_proxy.py PORT UPSTREAM [CERT KEY CA]``: with CERT and KEY it serves TLS itself (a
certificate the client trusts) and verifies an ``https`` UPSTREAM against CA, so it can see and
fault the requests of a TLS client such as the Kubernetes one (the Authorization header passes through).

``POST /_faults {"status": 429, "count": 2}`` answers the next 2 requests with that status (an AWS
style JSON error body, or ``"body"`` if given); ``{"delay": 3, "count": 1}`` holds the next request
that long before forwarding. ``"method"`` and ``"path"`` (a substring) narrow which requests a fault
takes. ``GET /_requests`` returns ``[method, path]`` of every request forwarded or faulted so far.
Everything else is forwarded to UPSTREAM unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from typing import Any

import aiohttp
import aiohttp.web

HOP = {"host", "content-length", "transfer-encoding", "connection"}


def _takes(fault: dict[str, Any], request: aiohttp.web.Request) -> bool:
    return (
        fault["count"] > 0
        and fault.get("method", request.method) == request.method
        and fault.get("path", "") in request.path
    )


def make_app(upstream: str, *, upstream_ssl: ssl.SSLContext | None = None) -> aiohttp.web.Application:
    """Return the proxy application forwarding to ``upstream`` (verified with ``upstream_ssl``)."""
    faults: list[dict[str, Any]] = []
    seen: list[tuple[str, str]] = []
    app = aiohttp.web.Application()

    async def control(request: aiohttp.web.Request) -> aiohttp.web.Response:
        faults.append(await request.json())
        return aiohttp.web.json_response({"faults": len(faults)})

    async def requests(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(seen)

    async def forward(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append((request.method, request.path))
        for fault in faults:
            if _takes(fault, request):
                fault["count"] -= 1
                if "delay" in fault:
                    await asyncio.sleep(fault["delay"])
                    break
                status = fault["status"]
                code = "ThrottlingException" if status == 429 else "ServiceException"
                body = fault.get("body") or {"__type": code, "message": "injected", "Message": "injected"}
                return aiohttp.web.json_response(body, status=status, headers={"x-amzn-ErrorType": code})
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        # forward the request as sent: no Content-Type of our own where the client sent none
        skip = () if "Content-Type" in request.headers else ("Content-Type",)
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                upstream + request.path_qs,
                data=body,
                headers=headers,
                ssl=upstream_ssl,
                skip_auto_headers=skip,
            ) as answer,
        ):
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP | {"content-encoding"}}
            return aiohttp.web.Response(status=answer.status, body=payload, headers=out)

    app.router.add_post("/_faults", control)
    app.router.add_get("/_requests", requests)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: list[str]) -> None:
    """Serve on 127.0.0.1:``argv[0]`` in front of ``argv[1]`` (TLS with ``argv[2:5]``)."""
    port, upstream, *tls = argv
    serving = upstream_ssl = None
    if tls:
        cert, key, ca = tls
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(cert, key)
        upstream_ssl = ssl.create_default_context(cafile=ca)
    app = make_app(upstream, upstream_ssl=upstream_ssl)
    aiohttp.web.run_app(app, host="127.0.0.1", port=int(port), ssl_context=serving, print=None)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
