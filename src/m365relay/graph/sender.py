"""GraphSender: hands one message to Microsoft Graph from a connector's mailbox (PROTOCOL.md §5).

Which request it makes:

* **MIME** ``POST /users/{mailbox}/sendMail`` with the base64 RFC 5322 message — the default, because it
  keeps every header and the exact MIME layout;
* **JSON** ``sendMail`` — when the caller asks for ``saveToSentItems=false`` (MIME sends always save);
* **draft + upload sessions + send** — when the request would exceed Graph's 4 MB cap; this needs the
  application permission Mail.ReadWrite; without it (after one fresh token, in case it was just granted)
  the message waits (``PermissionNeededError``, transient) with a remedy that says what to grant.

Every request carries a fresh ``client-request-id`` and every answer's ``request-id`` is recorded.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import quote

import httpx

from ..auth.tokens import AccessToken, TokenProvider
from ..connectors.model import ConnectorConfig
from ..errors import (
    ConsentMissingError,
    DeliveryError,
    PermissionMissingError,
    PermissionNeededError,
)
from ..metrics import Metrics
from ..net import async_client
from .calls import Call as _Call
from .calls import DraftHook
from .convert import convert
from .mime import OutgoingMessage, align_recipients
from .outcome import delivers, transport_failure
from .responses import translate_graph_error
from .upload import send_via_upload

# Graph caps each REST request at 4 MB (PROTOCOL.md §5); stay a little under it for headers and JSON.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
REQUEST_MARGIN = 64 * 1024
MAIL_SEND = "Mail.Send"
MAIL_READWRITE = "Mail.ReadWrite"
PERMISSION_RECHECK_SECONDS = 300.0  # a message held for Mail.ReadWrite looks for it again this often
# Any of these lets the relay find a sent message in Sent Items by internetMessageId (PROTOCOL.md §12).
READ_ROLES = ("Mail.ReadBasic.All", "Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite")


def can_read(roles: tuple[str, ...] | None) -> bool | None:
    """Whether a token may read the mailbox; None when the token is opaque (its roles unknown)."""
    return None if roles is None else any(r in roles for r in READ_ROLES)


@dataclass(frozen=True)
class SendResult:
    request_id: str | None  # Graph's request-id of the call that sent the message
    client_request_id: str
    method: str  # mime | json | upload
    elapsed: float
    request_ids: tuple[str, ...] = ()  # every Graph request-id of this send (drafts, uploads)
    notes: tuple[str, ...] = ()  # things the admin may want to know (dropped headers, removed recipients)


@dataclass
class PreparedSend:
    """A message ready to go: ``send()`` makes the Graph request(s)."""

    sender: GraphSender
    call: _Call
    outgoing: OutgoingMessage
    method: str
    notes: list[str]
    mime_body: bytes | None  # the request body, ready: base64 MIME or JSON
    started: float
    on_draft: DraftHook | None = None

    async def send(self) -> SendResult:
        sender, call, connector = self.sender, self.call, self.call.connector
        call.on_draft = self.on_draft
        try:
            if self.method == "mime" and self.mime_body is not None:
                response = await sender.request(
                    call, "POST", "sendMail", content=self.mime_body, headers={"Content-Type": "text/plain"}
                )
            elif self.method == "json" and self.mime_body is not None:
                response = await sender.request(
                    call, "POST", "sendMail", content=self.mime_body, headers={"Content-Type": "application/json"}
                )
            else:
                response = await send_via_upload(sender, call, self.outgoing, self.notes)
        except DeliveryError as exc:
            sender.count_error(connector, exc)
            raise
        elapsed = time.perf_counter() - self.started
        if sender.metrics is not None:
            sender.metrics.send_seconds.labels(connector.name).observe(elapsed)
        return SendResult(
            request_id=response.headers.get("request-id"),
            client_request_id=call.client_request_id,
            method=self.method,
            elapsed=elapsed,
            request_ids=tuple(call.request_ids),
            notes=tuple(self.notes),
        )


class GraphSender:
    def __init__(
        self,
        tokens: TokenProvider,
        *,
        metrics: Metrics | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        prefer_mime: bool = False,
    ) -> None:
        self.tokens = tokens
        # With a read permission, send saveToSentItems=false mail as MIME too: a Sent Items copy is what lets an
        # in-doubt send be checked instead of repeated (M365RELAY_RECONCILE_PREFER_MIME).
        self.prefer_mime = prefer_mime
        self.metrics = metrics
        self.timeout = timeout
        self.transport = transport
        self.max_connections = max_connections
        self._clients: dict[str, httpx.AsyncClient] = {}

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def send(
        self,
        connector: ConnectorConfig,
        message: OutgoingMessage | EmailMessage | bytes,
        *,
        envelope: list[str] | None = None,
        save_to_sent_items: bool = True,
        mailbox: str = "",
    ) -> SendResult:
        """Send ``message`` from the connector's mailbox. ``envelope`` (the SMTP RCPT TO list), when given,
        decides exactly who receives it. Raises a ``DeliveryError`` subclass on failure."""
        prepared = await self.prepare(
            connector, message, envelope=envelope, save_to_sent_items=save_to_sent_items, mailbox=mailbox
        )
        return await prepared.send()

    async def prepare(
        self,
        connector: ConnectorConfig,
        message: OutgoingMessage | EmailMessage | bytes,
        *,
        envelope: list[str] | None = None,
        save_to_sent_items: bool = True,
        mailbox: str = "",
    ) -> PreparedSend:
        """Everything before the first Graph request: recipients, token, the choice of request, the body.
        The dispatcher prepares outside its in-flight slot and holds the slot only for ``send()``."""
        started = time.perf_counter()
        outgoing = _outgoing(message)
        notes: list[str] = []
        if envelope is not None:
            removed = align_recipients(outgoing, envelope)
            if removed:
                notes.append(f"not in the envelope, removed from the headers: {', '.join(removed)}")
        if not outgoing.values("From"):
            outgoing.set_value("From", connector.user_name)  # as Graph would: the mailbox sends
        call = _Call(connector, await self._token(connector), connector.mailbox_address(mailbox))
        try:
            method = self._choose(outgoing.size, call.token, save_to_sent_items)
        except PermissionNeededError:
            if not call.token.from_cache:
                raise
            # The permission may have been granted since this token was issued: a token carries the roles
            # of its issue time (PROTOCOL.md §2), so ask for one fresh token before holding the message.
            self.tokens.invalidate(connector.id)
            call.token = await self._token(connector)
            method = self._choose(outgoing.size, call.token, save_to_sent_items)
        if method == "json" and self.prefer_mime and can_read(call.token.roles):
            method = "mime"
            notes.append("sent as MIME (saved in Sent Items) although saveToSentItems=false, so that a send whose "
                         "outcome is unknown can be checked there instead of repeated")  # fmt: skip
        body: bytes | None = None
        if method == "mime":
            body = base64.b64encode(outgoing.to_bytes())
        elif method == "json":
            body = self.json_payload(outgoing, call.mailbox, notes)
            if len(body) > MAX_REQUEST_BYTES - REQUEST_MARGIN:
                # JSON escapes non-ASCII text (\uXXXX): the same message can outgrow one request as JSON.
                method, body = self._choose(len(body) * 3 // 4, call.token, True), None
        return PreparedSend(self, call, outgoing, method, notes, body, started)

    # -- choosing the request --------------------------------------------------------------------

    def _choose(self, size: int, token: AccessToken, save_to_sent_items: bool) -> str:
        mime_request = 4 * ((size + 2) // 3)  # base64 of the whole message
        fits = mime_request <= MAX_REQUEST_BYTES - REQUEST_MARGIN
        if fits:
            return "mime" if save_to_sent_items else "json"
        if token.roles is not None and MAIL_READWRITE not in token.roles:
            limit_mb = (MAX_REQUEST_BYTES - REQUEST_MARGIN) * 3 / 4 / 1_000_000
            raise PermissionNeededError(
                f"the message is {size / 1_000_000:.1f} MB; one Graph request carries at most "
                f"{limit_mb:.1f} MB of mail, and larger mail needs the Mail.ReadWrite permission",
                retry_after=PERMISSION_RECHECK_SECONDS,
                remedy=(
                    "To send messages over about 3 MB, add the Microsoft Graph application permission "
                    "Mail.ReadWrite to the app (API permissions > Add a permission > Microsoft Graph > "
                    "Application permissions > Mail.ReadWrite) and grant admin consent; m365relay then "
                    "uploads large attachments in chunks, and this message, which waits meanwhile, goes. "
                    f"Otherwise cancel it and keep messages under {limit_mb:.1f} MB."
                ),
            )
        return "upload"

    # -- the requests ----------------------------------------------------------------------------

    def json_payload(self, outgoing: OutgoingMessage, mailbox: str, notes: list[str]) -> bytes:
        """The JSON sendMail body (saveToSentItems=false)."""
        from .convert import attachment_json

        converted = convert(outgoing, mailbox)
        if converted.dropped_headers:
            notes.append(f"headers Graph's JSON cannot carry were dropped: {', '.join(converted.dropped_headers)}")
        message = dict(converted.message)
        message["attachments"] = [attachment_json(outgoing.body, a) for a in converted.attachments]
        return json.dumps({"message": message, "saveToSentItems": False}, ensure_ascii=False).encode()

    async def request(
        self,
        call: _Call,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        absolute_url: str | None = None,
        authorize: bool = True,
    ) -> httpx.Response:
        """One Graph request. 401 is retried once with a fresh token; other failures raise ``DeliveryError``."""
        connector = call.connector
        mailbox = call.mailbox or connector.user_name
        url = absolute_url or f"{connector.cloud.graph_url}/v1.0/users/{quote(mailbox)}/{path}"
        all_headers = {"client-request-id": call.client_request_id, "return-client-request-id": "true"}
        all_headers.update(headers or {})
        if authorize:
            all_headers["Authorization"] = f"Bearer {call.token.value.reveal()}"
        client = self._client(connector)
        if self.metrics is not None:
            self.metrics.graph_requests.labels(connector.name, path.rsplit("/", 1)[-1] or path).inc()
        try:
            response = await client.request(method, url, content=content, headers=all_headers)
        except httpx.TransportError as exc:  # sent or not? graph/outcome.py decides
            raise transport_failure(exc, f"Graph {path}", sending=delivers(method, path)) from exc
        if request_id := response.headers.get("request-id"):
            call.request_ids.append(request_id)
        if response.status_code == 401 and authorize and not call.retried_auth:
            # A revoked or skewed token: forget it, get a fresh one, try once more.
            call.retried_auth = True
            self.tokens.invalidate(connector.id)
            call.token = await self._token(connector)
            return await self.request(call, method, path, content=content, headers=headers, absolute_url=absolute_url)
        if response.status_code >= 300:  # a redirect is not a send: httpx does not follow it, Graph never sends one
            raise translate_graph_error(response, path.rsplit("/", 1)[-1] if "/" in path else path)
        return response

    async def read(
        self, connector: ConnectorConfig, path: str, query: dict[str, str] | None = None, *, mailbox: str | None = None
    ) -> httpx.Response:
        """A Graph GET on the connector's mailbox, or on ``mailbox`` (Sent Items lookups, drafts: mailbox/; the
        doctor's scope probe). ``path`` "" with ``mailbox`` "" is ``GET /users``. Raises like a send."""
        call = _Call(connector, await self._token(connector))
        who = connector.user_name if mailbox is None else mailbox
        url = f"{connector.cloud.graph_url}/v1.0/users" + (f"/{quote(who)}/{path}" if who else "")
        if query:  # OData option names keep their `$`; values are percent-encoded whole
            url += "?" + "&".join(f"{name}={quote(value, safe='')}" for name, value in query.items())
        return await self.request(call, "GET", path, absolute_url=url)

    async def check_token(self, connector: ConnectorConfig) -> AccessToken:
        """Get a token and check its permissions, without sending anything (probes, the doctor)."""
        return await self._token(connector)

    # -- helpers -------------------------------------------------------------------------------

    async def _token(self, connector: ConnectorConfig) -> AccessToken:
        token = await self.tokens.acquire_async(connector)
        # Reading roles tells "consent missing" apart before any mail is sent (PROTOCOL.md §2).
        if token.roles is not None and not token.roles:
            raise ConsentMissingError("the access token carries no application permissions (roles claim absent)")
        if token.roles is not None and MAIL_SEND not in token.roles:
            raise PermissionMissingError(
                f"the access token's permissions ({', '.join(token.roles)}) do not include Mail.Send"
            )
        return token

    def _client(self, connector: ConnectorConfig) -> httpx.AsyncClient:
        key = str(connector.cloud.ca_file)
        client = self._clients.get(key)
        if client is None:
            client = async_client(connector.cloud.ca_file, self.timeout, self.transport, self.max_connections)
            self._clients[key] = client
        return client

    def count_error(self, connector: ConnectorConfig, error: DeliveryError) -> None:
        if self.metrics is not None:
            self.metrics.graph_errors.labels(connector.name, error.code or error.kind).inc()


def _outgoing(message: OutgoingMessage | EmailMessage | bytes) -> OutgoingMessage:
    if isinstance(message, OutgoingMessage):
        return message
    if isinstance(message, bytes):
        return OutgoingMessage.from_bytes(message)
    return OutgoingMessage.from_message(message)
