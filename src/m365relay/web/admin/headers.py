"""Security headers on every admin response (pages, redirects, static files).

* ``Content-Security-Policy``: scripts and styles only from this site, no inline code, so even markup that
  slipped past escaping could not run; ``form-action`` allows https: because Grant admin consent redirects
  the posted form on to Microsoft's sign-in host (browsers apply form-action to that redirect);
* ``frame-ancestors 'none'`` / ``X-Frame-Options``: no clickjacking of the Save or Grant buttons;
* ``Referrer-Policy: same-origin``: the consent answer's ``state`` never leaks to another site;
* ``Cache-Control: no-store``: pages with configuration stay out of shared caches and the back-forward cache.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")


class AdminHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/admin" or path.startswith("/admin/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith("/admin/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in {k for k, _ in HEADERS}]
                headers += HEADERS
                if not static:
                    headers = [h for h in headers if h[0].lower() != b"cache-control"] + [NO_STORE]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
