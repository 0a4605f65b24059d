"""The library API: queue mail from Python, in-process, against the relay's database.

::

    from m365relay import Relay

    with Relay() as relay:                       # settings from M365RELAY_* / the TOML file
        message_id = relay.enqueue(to=["ops@contoso.com"], subject="Backup done", text="All good.")
        print(relay.status(message_id).status)   # queued → sending → sent

``enqueue`` returns as soon as the message is committed; a worker (``m365relay worker`` or ``serve``)
sends it. For applications on other hosts use the HTTP API or ``m365relay.client.RelayClient``.
"""

from __future__ import annotations

import asyncio
import time
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from .compose import AttachmentSpec, MessageSpec, compose
from .connectors import DEFAULT_NAME, ConnectorConfig
from .errors import ValidationError
from .graph import OutgoingMessage, SendResult
from .graph.acceptance import accept_ready, ready_rules
from .outbox import MessageRecord
from .runtime import Runtime
from .settings import Settings, load_settings


class Relay:
    def __init__(self, settings: Settings | None = None, *, runtime: Runtime | None = None) -> None:
        self._owns_runtime = runtime is None
        self.runtime = runtime or Runtime(settings or load_settings())

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_runtime:
            self.runtime.close()

    def enqueue(
        self,
        message: EmailMessage | bytes | MessageSpec | None = None,
        *,
        idempotency_key: str | None = None,
        connector: str = DEFAULT_NAME,
        envelope: list[str] | None = None,
        save_to_sent_items: bool = True,
        source: str = "library",
        source_detail: str | None = None,
        content_hash: str | None = None,
        **fields: Any,
    ) -> int:
        """Commit a message to the outbox and return its id.

        ``message`` is an ``EmailMessage``, raw RFC 5322 bytes, or a ``MessageSpec``; or pass the fields
        directly: ``to``, ``cc``, ``bcc``, ``subject``, ``text``, ``html``, ``sender``, ``reply_to``,
        ``attachments`` (``AttachmentSpec`` or ``(filename, bytes)``), ``headers``, ``importance``.
        The same ``idempotency_key`` with the same content returns the first message's id.
        """
        config = self.runtime.connectors.get(connector)
        outgoing = self._outgoing(message, fields, config)
        # Suppressed recipients are dropped; none left raises AllSuppressedError (docs/delivery.md).
        envelope, dropped = self.runtime.suppressions.at_acceptance(config.id, envelope, outgoing.header_recipients())
        result = self.runtime.outbox.enqueue(
            config.id,
            outgoing,
            envelope=envelope,
            source=source,
            source_detail=source_detail,
            idempotency_key=idempotency_key,
            content_hash=content_hash,
            save_to_sent_items=save_to_sent_items,
        )
        if result.created and dropped:
            self.runtime.suppressions.record_dropped(result.id, dropped)
        if result.created:
            self.runtime.metrics.messages_accepted.labels(source).inc()
        return result.id

    def status(self, message_id: int) -> MessageRecord:
        return self.runtime.outbox.get(message_id)

    def wait(self, message_id: int, timeout: float = 60.0, poll: float = 0.25) -> MessageRecord:
        """Block until the message is sent, failed or cancelled (or ``timeout`` passes; then the last state)."""
        deadline = time.monotonic() + timeout
        record = self.status(message_id)
        while not record.final and time.monotonic() < deadline:
            time.sleep(poll)
            record = self.runtime.outbox.get(message_id, events=False)
        return self.status(message_id)

    def send_now(
        self,
        message: EmailMessage | bytes | MessageSpec | None = None,
        *,
        connector: str = DEFAULT_NAME,
        save_to_sent_items: bool = True,
        **fields: Any,
    ) -> SendResult:
        """Send directly through Graph, bypassing the queue (raises the typed error on failure)."""
        config = self.runtime.connectors.get(connector)
        outgoing = self._outgoing(message, fields, config)
        outgoing.ensure_message_id(config.user_name.rpartition("@")[2])

        async def go() -> SendResult:
            try:
                return await self.runtime.sender.send(config, outgoing, save_to_sent_items=save_to_sent_items)
            finally:
                await self.runtime.sender.aclose()

        return asyncio.run(go())

    def _outgoing(
        self, message: EmailMessage | bytes | MessageSpec | None, fields: dict[str, Any], config: ConnectorConfig
    ) -> OutgoingMessage:
        if message is not None and fields:
            raise ValidationError("message", "pass a message or fields, not both")
        rules = ready_rules(config.user_name, self.runtime.settings.smtp_from_policy, "the library", config.send_as)
        if isinstance(message, bytes):
            return accept_ready(OutgoingMessage.from_bytes(message), rules)
        if isinstance(message, EmailMessage):
            return accept_ready(OutgoingMessage.from_message(message), rules)
        spec = message if isinstance(message, MessageSpec) else _spec(fields)
        return OutgoingMessage.from_message(compose(spec, default_from=config.user_name))


def _spec(fields: dict[str, Any]) -> MessageSpec:
    attachments = [
        a if isinstance(a, AttachmentSpec) else AttachmentSpec(str(a[0]), bytes(a[1]))
        for a in fields.pop("attachments", [])
    ]

    def addresses(key: str) -> list[str]:
        value = fields.pop(key, [])
        return [value] if isinstance(value, str) else list(value)

    spec = MessageSpec(
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        reply_to=addresses("reply_to"),
        subject=str(fields.pop("subject", "")),
        text=fields.pop("text", None),
        html=fields.pop("html", None),
        sender=fields.pop("sender", None),
        attachments=attachments,
        headers=dict(fields.pop("headers", {})),
        importance=fields.pop("importance", None),
    )
    if fields:
        raise ValidationError("fields", f"unknown field(s): {', '.join(sorted(fields))}")
    return spec
