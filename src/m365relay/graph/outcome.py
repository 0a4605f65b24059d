"""Was it sent? A transport failure during a *send* request is either clean (nothing reached Graph) or in doubt.

Clean: the connection was never made (refused, DNS, connect timeout, no free connection in the pool) or the
request could not be written whole (write error/timeout: Graph acts only on a complete request). In doubt:
the request was written and the answer never came — the connection was reset or closed before the status
line (`ReadError`, `RemoteProtocolError`), or the read timed out. Exchange may have accepted the message, so
the caller must not simply send it again (issue 15; PROTOCOL.md §12). A 4xx/5xx *answer* is always clean.
"""

from __future__ import annotations

import httpx

from ..errors import NetworkError, SendInDoubtError, TlsTrustError
from ..net import translate_transport_error

IN_DOUBT = (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError)


def delivers(method: str, path: str) -> bool:
    """Requests that hand a message over: `sendMail` and a draft's `send`."""
    return method == "POST" and (path == "sendMail" or path.endswith("/send"))


def transport_failure(exc: httpx.TransportError, what: str, *, sending: bool) -> NetworkError | TlsTrustError:
    if sending and isinstance(exc, IN_DOUBT):
        return SendInDoubtError(
            f"{what}: no answer after the request was sent ({type(exc).__name__}); it may have been sent"
        )
    return translate_transport_error(exc, what)
