"""Graph's error envelope (PROTOCOL.md §6) and the errors the sandbox raises inside handlers."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from starlette.responses import Response


def format_retry_after(seconds: float) -> str:
    """Integers stay integers ("1"); fractions keep millisecond precision ("2.5")."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def ceil_seconds(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class GraphError(Exception):
    """An error response: HTTP status, Graph `code`, human `message`, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self, now: float, request_id: str, client_request_id: str) -> Response:
        date = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {"date": date, "request-id": request_id, "client-request-id": client_request_id},
            }
        }
        return Response(
            json.dumps(body),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )


def unauthorized(code: str, message: str, base_url: str) -> GraphError:
    # Graph names the authority a client should go to for a token [obs].
    challenge = (
        f'Bearer realm="", authorization_uri="{base_url}/common/oauth2/authorize", '
        'client_id="00000003-0000-0000-c000-000000000000"'
    )
    return GraphError(401, code, message, {"WWW-Authenticate": challenge})


def throttled(code: str, message: str, retry_after: str) -> GraphError:
    return GraphError(429, code, message, {"Retry-After": retry_after})


def invalid_recipients(detail: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRecipients", f"At least one recipient is not valid., {detail}")


def send_as_denied() -> GraphError:
    return GraphError(
        403,
        "ErrorSendAsDenied",
        "The user account which was used to submit this request does not have the right to send mail on "
        "behalf of the specified sending account., Cannot submit message.",
    )


def message_too_large() -> GraphError:
    return GraphError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum supported size.")


def request_too_large() -> GraphError:
    return GraphError(413, "RequestEntityTooLarge", "The maximum request length supported is 4MB.")


def bad_json() -> GraphError:
    return GraphError(
        400,
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of "
        "valid JSON format.",
    )
