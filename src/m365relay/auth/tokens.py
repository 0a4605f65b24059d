"""App-only access tokens through MSAL's client-credentials flow, one ``ConfidentialClientApplication`` per
connector, created lazily and rebuilt whenever the connector's configuration changes.

MSAL keeps the token in its in-memory cache and hands it back until less than five minutes of its
lifetime remain (PROTOCOL.md §11), so a connector makes one token request per token lifetime however
many messages it sends. MSAL's own HTTP traffic goes through an ``httpx.Client`` we build (``net.py``),
which fixes TLS trust to the connector's CA file or the system store.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import msal

from ..clock import Clock, SystemClock
from ..connectors.model import ConnectorConfig, Credential
from ..connectors.secretbox import Secret
from ..errors import DeliveryError, MissingCredentialError
from ..net import sync_client, translate_transport_error
from .claims import token_roles
from .translate import translate_discovery_failure, translate_token_error, translate_token_http_error


@dataclass(frozen=True)
class AccessToken:
    value: Secret
    expires_at: datetime
    roles: tuple[str, ...] | None  # None: the token could not be decoded (treat as opaque)
    from_cache: bool

    def __repr__(self) -> str:
        return (
            f"AccessToken(expires_at={self.expires_at.isoformat()}, roles={self.roles}, from_cache={self.from_cache})"
        )


METADATA_TTL_SECONDS = 86_400.0


class MetadataCache:
    """Successful metadata GETs (OpenID discovery of the authority), kept for the process and shared by every
    MSAL application built for any connector: an application is rebuilt for a fresh token, a probe or a
    rotation check, and each build would otherwise fetch the same document again. A day, as MSAL's own
    cache keeps them; the documents name endpoints that do not move."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = METADATA_TTL_SECONDS) -> None:
        self.clock = clock
        self.ttl = ttl
        self._entries: dict[str, tuple[float, httpx.Response]] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> httpx.Response | None:
        with self._lock:
            entry = self._entries.get(url)
        if entry is None or self.clock() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, url: str, response: httpx.Response) -> None:
        if 200 <= response.status_code < 300:
            with self._lock:
                self._entries[url] = (self.clock(), response)


class RecordingHttpClient:
    """MSAL's ``HttpClient`` interface on top of httpx. It remembers the last error response so that a
    failed discovery (which MSAL reports as a bare ValueError) can still be explained by its AADSTS code,
    and answers repeated metadata GETs from the process's ``MetadataCache``."""

    def __init__(self, client: httpx.Client, metadata: MetadataCache | None = None) -> None:
        self.client = client
        self.metadata = metadata
        self.last_error: httpx.Response | None = None

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> httpx.Response:
        if isinstance(data, dict):
            # MSAL hands the client assertion over as bytes; httpx would form-encode that as "b'…'".
            form = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
            return self._keep(self.client.post(url, params=params, data=form, headers=headers))
        return self._keep(self.client.post(url, params=params, content=data, headers=headers))

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> httpx.Response:
        key = str(httpx.URL(url, params=params))
        if self.metadata is not None and (cached := self.metadata.get(key)) is not None:
            return cached
        response = self._keep(self.client.get(url, params=params, headers=headers))
        if self.metadata is not None:
            self.metadata.put(key, response)
        return response

    def close(self) -> None:
        self.client.close()

    def _keep(self, response: httpx.Response) -> httpx.Response:
        response.read()
        if response.status_code >= 400:
            self.last_error = response
        return response


@dataclass
class _Entry:
    key: str
    version: int  # the connector's config_version the app was built from
    app: msal.ConfidentialClientApplication
    http: RecordingHttpClient
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: AccessToken | None = None


# OAuth error codes (RFC 6749 §5.2 and Entra's own) that mean "try again", not "your setup is wrong":
# AADSTS90033 is Entra's "temporarily unavailable"; 50196 is its "loop detected" throttle.
TRANSIENT_OAUTH_ERRORS = {"temporarily_unavailable", "server_error"}
TRANSIENT_AADSTS = {90033, 50196}
REFRESH_MARGIN_SECONDS = 300  # MSAL refreshes a cached token when less than five minutes remain
TokenListener = Callable[[ConnectorConfig, str], None]  # (connector, "success" | error kind)


def _is_transient(result: dict[str, Any], response: httpx.Response | None) -> bool:
    """An error dict MSAL returned for what was really throttling or an outage (it returns dicts for any
    JSON error body below 500)."""
    if response is not None and (response.status_code == 429 or response.status_code >= 500):
        return True
    codes = {int(c) for c in result.get("error_codes") or [] if str(c).isdigit()}
    return result.get("error") in TRANSIENT_OAUTH_ERRORS or bool(codes & TRANSIENT_AADSTS)


class TokenProvider:
    """Tokens for any number of connectors. Thread-safe; ``acquire_async`` keeps MSAL off the event loop."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        on_request: TokenListener | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self.transport = transport
        self.on_request = on_request
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._building: dict[int, threading.Lock] = {}  # one build per connector at a time
        self.metadata = MetadataCache()

    # -- public ---------------------------------------------------------------------------------

    def acquire(self, connector: ConnectorConfig, *, credential: Credential | None = None) -> AccessToken:
        """A valid token for the connector (from MSAL's cache when possible). Raises ``DeliveryError``.

        With ``credential`` (rotation, doctor), a throwaway application is used, so the connector's own
        cache is neither read nor disturbed.
        """
        if credential is not None:
            entry = self._build(connector, credential)
            try:
                return self._acquire(connector, entry)
            finally:
                entry.http.close()
        return self._acquire(connector, self._entry(connector))

    async def acquire_async(self, connector: ConnectorConfig, *, credential: Credential | None = None) -> AccessToken:
        if credential is None and (token := self._still_fresh(connector)) is not None:
            return token  # the common case: no thread hop, no MSAL cache lookup
        return await asyncio.to_thread(self.acquire, connector, credential=credential)

    def _still_fresh(self, connector: ConnectorConfig) -> AccessToken | None:
        """The last token, while more than MSAL's own refresh margin (five minutes) of it remains."""
        entry = self._entries.get(connector.id)
        token = entry.last if entry is not None and self._current(entry, connector) else None
        if token is None or (token.expires_at - self.clock.now()).total_seconds() <= REFRESH_MARGIN_SECONDS:
            return None
        return AccessToken(token.value, token.expires_at, token.roles, from_cache=True)

    def invalidate(self, connector_id: int) -> None:
        """Forget the connector's app and cached token (and MSAL's cached errors): the next call starts fresh.
        Used after Graph rejected a token, and before probing a paused connector."""
        with self._lock:
            entry = self._entries.pop(connector_id, None)
        if entry is not None:
            entry.http.close()

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.http.close()

    # -- internals ------------------------------------------------------------------------------

    def _entry(self, connector: ConnectorConfig) -> _Entry:
        with self._lock:
            entry = self._entries.get(connector.id)
            if entry is not None and self._current(entry, connector):
                return entry
            building = self._building.setdefault(connector.id, threading.Lock())
        # Build outside the provider-wide lock (discovery is a network call), but one build per connector:
        # the first sends after a start all ask at once, and each would build (and discover) its own app.
        with building:
            return self._build_entry(connector)

    def _build_entry(self, connector: ConnectorConfig) -> _Entry:
        with self._lock:
            entry = self._entries.get(connector.id)
            if entry is not None and self._current(entry, connector):
                return entry  # built by the thread this one waited for
        fresh = self._build(connector, connector.credential)
        with self._lock:
            old = self._entries.get(connector.id)
            if old is not None and self._current(old, connector):
                fresh.http.close()  # another thread won the race; use its app and its cache
                return old
            self._entries[connector.id] = fresh
        if old is not None:
            old.http.close()
        return fresh

    @staticmethod
    def _current(entry: _Entry, connector: ConnectorConfig) -> bool:
        """Whether ``entry`` serves a request made with this (possibly older) snapshot of the connector.

        A send prepared just before the admin rotated the secret still carries the old configuration; it
        must use the app built from the newer one, not rebuild from a secret that may be deleted already."""
        return entry.key == connector.token_key or entry.version > connector.config_version

    def _build(self, connector: ConnectorConfig, credential: Credential | None) -> _Entry:
        if credential is None:
            raise MissingCredentialError("the connector has no client secret or certificate")
        http = RecordingHttpClient(sync_client(connector.cloud.ca_file, self.timeout, self.transport), self.metadata)
        try:
            app = msal.ConfidentialClientApplication(
                connector.client_id,
                client_credential=credential.msal_credential(),
                authority=connector.cloud.authority(connector.tenant_id),
                http_client=http,
                # Our clouds are data (clouds.py); MSAL must not phone its instance-discovery host.
                instance_discovery=False,
                token_cache=msal.TokenCache(),
            )
        except httpx.TransportError as exc:
            http.close()
            raise translate_transport_error(exc, "OpenID discovery") from exc
        except ValueError as exc:
            http.close()
            raise translate_discovery_failure(http.last_error, connector) from exc
        except Exception:
            http.close()
            raise
        return _Entry(connector.token_key, connector.config_version, app, http)

    def _acquire(self, connector: ConnectorConfig, entry: _Entry) -> AccessToken:
        with entry.lock:  # one request per lifetime even when many senders ask at once
            entry.http.last_error = None
            try:
                result = entry.app.acquire_token_for_client(scopes=[connector.cloud.scope])
            except httpx.TransportError as exc:
                error: DeliveryError = translate_transport_error(exc, "token request")
                self._notify(connector, error.kind)
                raise error from exc
            except (msal.exceptions.MsalServiceError, httpx.HTTPStatusError, ValueError) as exc:
                error = translate_token_http_error(entry.http.last_error)
                self._notify(connector, error.kind)
                raise error from exc
        if "access_token" not in result:
            error = (
                translate_token_http_error(entry.http.last_error)
                if _is_transient(result, entry.http.last_error)
                else translate_token_error(result, connector)
            )
            self._notify(connector, error.kind)
            raise error
        from_cache = result.get("token_source") == "cache"
        if not from_cache:
            self._notify(connector, "success")
        expires_in = int(result.get("expires_in", 0))
        token = AccessToken(
            value=Secret(result["access_token"]),
            expires_at=self.clock.now() + timedelta(seconds=expires_in),
            roles=token_roles(result["access_token"]),
            from_cache=from_cache,
        )
        if not from_cache:
            entry.last = token
        return token

    def _notify(self, connector: ConnectorConfig, outcome: str) -> None:
        if self.on_request is not None:
            self.on_request(connector, outcome)
