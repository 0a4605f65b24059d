"""HTTPS clients for the token endpoint and Graph, with TLS trust taken only from the connector's CA file
or the system store — never from ``REQUESTS_CA_BUNDLE`` and friends (PROTOCOL.md §11).

Transport failures are translated here, once: an untrusted certificate is the connector's configuration
(``TlsTrustError``, pause); anything else on the wire is transient (``NetworkError``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path

import httpx

from . import __version__
from .errors import NetworkError, TlsTrustError

USER_AGENT = f"m365relay/{__version__}"
# Inside ``quiet_http()``, httpx logs nothing at all (webhook URLs are secrets in themselves).
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("m365relay_quiet_http", default=False)


class RedactedRequestLog(logging.Filter):
    """httpx logs every request's full URL at INFO. Upload-session URLs carry their own token in the query
    string, so the query goes; inside ``quiet_http()`` the whole line goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _QUIET.get():
            return False
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None, fragment=None) if isinstance(arg, httpx.URL) and arg.query else arg
                for arg in record.args
            )
        return True


_FILTER = RedactedRequestLog()


def _guard_logs() -> None:
    logger = logging.getLogger("httpx")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


@contextlib.contextmanager
def quiet_http() -> Iterator[None]:
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


@lru_cache(maxsize=32)
def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context: the given CA file only, or the system store."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return ssl.create_default_context()


def limits(max_connections: int = 100) -> httpx.Limits:
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


def sync_client(
    ca_file: Path | None, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    _guard_logs()
    return httpx.Client(
        verify=ssl_context(ca_file),
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        # trust_env keeps HTTPS_PROXY/NO_PROXY working; it cannot widen TLS trust because an explicit
        # SSLContext is passed (httpx reads SSL_CERT_FILE only for verify=True).
        trust_env=True,
        transport=transport,
    )


def async_client(
    ca_file: Path | None,
    timeout: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    _guard_logs()
    return httpx.AsyncClient(
        verify=ssl_context(ca_file),
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        trust_env=True,
        transport=transport,
        limits=limits(max_connections),
    )


def translate_transport_error(exc: httpx.TransportError, what: str) -> NetworkError | TlsTrustError:
    """One place that decides what a failed connection means for the admin."""
    if _is_certificate_failure(exc):
        return TlsTrustError(f"{what}: the server's TLS certificate is not trusted")
    if isinstance(exc, httpx.TimeoutException):
        return NetworkError(f"{what}: timed out ({type(exc).__name__})")
    return NetworkError(f"{what}: {type(exc).__name__}")


def _is_certificate_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds. Graph sends delta-seconds, sometimes fractional ("2.128", PROTOCOL.md §7);
    RFC 9110 also allows an HTTP-date. Header lookup is case-insensitive in httpx."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
