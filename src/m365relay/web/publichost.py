"""The address this server hands out, from ``M365RELAY_PUBLIC_BASE_URL`` rather than the request.

Without it, every URL the server builds (``Location``, ``status_url``, ``next_url``, the admin UI's
redirects) would come from the client's ``Host`` header: a client, or anyone who can make one send a
forged Host, could have the relay point others at a host of their choosing (RFC 9110 §7.2 leaves the Host
to the client). When the public base URL is set:

* a request naming another host gets 421 Misdirected Request (RFC 9110 §15.5.20) — loopback names stay
  allowed, for health checks and tools on the machine itself;
* the scheme and host of every URL built for the request are the public ones.

Unset, the server is taken to be reached directly and Host is used as given (the default for ``demo``).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


class PublicHostMiddleware:
    def __init__(self, app: ASGIApp, public_base_url: str) -> None:
        self.app = app
        parts = urlsplit(public_base_url)
        self.scheme = parts.scheme
        self.netloc = parts.netloc.lower()
        self.hostname = (parts.hostname or "").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _host_header(scope)
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host != self.netloc and name != self.hostname and name not in LOOPBACK_NAMES:
            await _misdirected(send, self.netloc)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", self.netloc.encode())]
        await self.app({**scope, "scheme": self.scheme, "headers": headers}, receive, send)


def _host_header(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"host":
            return str(value.decode("latin-1").strip().lower())
    return ""


async def _misdirected(send: Send, netloc: str) -> None:
    body = json.dumps(
        {
            "type": "https://m365relay.dev/problems/misdirected-request",
            "title": "Not this server",
            "status": 421,
            "detail": f"This server answers as {netloc}; the request named another host.",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 421,
            "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
