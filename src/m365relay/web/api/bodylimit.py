"""The request body limit (``api_max_body_bytes``), enforced on the stream: a ``Content-Length`` over the
limit is refused before a byte of the body is read; a body without one (chunked) is counted as it
arrives and refused the moment it passes the limit. Either way the answer is a 413 problem and nothing
larger than the limit is ever buffered.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..problems import ProblemError, problem_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes (api_max_body_bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(Request(scope), "payload-too-large", self._detail())
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException: FastAPI lets it through even while it parses the body.
                    raise ProblemError("payload-too-large", self._detail())
            return message

        await self.app(scope, counting_receive, send)
