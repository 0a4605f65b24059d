"""A Django email backend: ``django.core.mail.send_mail`` and ``EmailMessage.send()`` go through m365relay.

::

    EMAIL_BACKEND = "m365relay.contrib.django.EmailBackend"

Two modes (docs/django.md):

* **HTTP** — ``M365RELAY_API_URL`` and ``M365RELAY_API_KEY`` set: each message is posted to the relay's
  ``POST /api/v1/messages/raw`` (the Django site and the relay may run on different hosts).
* **In-process** — otherwise: each message is committed straight into the relay's database (same host or
  same PostgreSQL), configured by ``M365RELAY = {"home": …, "database_url": …}`` and/or ``M365RELAY_<SETTING>``
  Django settings, over the usual ``M365RELAY_*`` environment variables. A ``m365relay worker`` or
  ``serve`` sends it.

Either way the message is Django's own MIME (``message.message()``: attachments, alternatives, cc,
reply-to, extra headers as Django writes them) and the envelope is ``message.recipients()`` — so Bcc
recipients receive it and never appear in the headers. ``send_messages`` returns once each message is
queued, not sent. Failures raise m365relay's typed errors (``M365RelayError`` subclasses), unless
``fail_silently`` is true: then, as Django defines it, the message is skipped and not counted.

Django is imported only when the backend is used, so m365relay never needs it otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..addresses import AddressError, parse_mailbox, routable
from ..connectors.store import DEFAULT_NAME
from ..errors import M365RelayError, ValidationError

if TYPE_CHECKING:
    from ..client import RelayClient
    from ..relay import Relay

BACKEND_OPTIONS = {"API_URL", "API_KEY", "API_TIMEOUT", "API_VERIFY", "CONNECTOR"}


class EmailBackend:
    """Django's backend interface (``open``, ``close``, ``send_messages``, context manager); it needs no
    base class from Django, which keeps Django out of m365relay's imports."""

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        connector: str | None = None,
        timeout: float | None = None,
        verify: Any = None,
        relay_settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        options = _django_options()
        self.fail_silently = fail_silently
        self.api_url = api_url or options.get("API_URL")
        self.api_key = api_key or options.get("API_KEY")
        self.connector = connector or options.get("CONNECTOR")
        self.timeout = float(timeout or options.get("API_TIMEOUT") or 30.0)
        self.verify = verify if verify is not None else options.get("API_VERIFY", True)
        self.relay_settings = {**_django_relay_settings(), **(relay_settings or {})}
        if bool(self.api_url) != bool(self.api_key):
            raise ValidationError(
                "M365RELAY_API_URL" if not self.api_url else "M365RELAY_API_KEY",
                "HTTP mode needs both M365RELAY_API_URL and M365RELAY_API_KEY",
            )
        self._client: RelayClient | None = None
        self._relay: Relay | None = None
        self._lock = threading.RLock()

    @property
    def mode(self) -> str:
        return "http" if self.api_url else "in-process"

    # -- Django's interface -------------------------------------------------------------------------

    def open(self) -> bool:
        """Open the client or the database. True if this call opened it (Django's convention)."""
        with self._lock:
            if self._client is not None or self._relay is not None:
                return False
            try:
                if self.api_url:
                    from ..client import RelayClient

                    assert self.api_key is not None
                    self._client = RelayClient(self.api_url, self.api_key, timeout=self.timeout, verify=self.verify)
                else:
                    from ..relay import Relay
                    from ..settings import load_settings

                    self._relay = Relay(load_settings(**self.relay_settings))
            except M365RelayError:
                if not self.fail_silently:
                    raise
                return False
            return True

    def close(self) -> None:
        with self._lock:
            client, relay, self._client, self._relay = self._client, self._relay, None, None
        if client is not None:
            client.close()
        if relay is not None:
            relay.close()

    def __enter__(self) -> EmailBackend:
        try:
            self.open()
        except Exception:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Queue each message; the number queued (a message without recipients is skipped, as Django does)."""
        if not email_messages:
            return 0
        with self._lock:
            opened = self.open()
            if self._client is None and self._relay is None:
                return 0  # could not open, and fail_silently said to say nothing
            try:
                return sum(1 for message in email_messages if self._send(message))
            finally:
                if opened:
                    self.close()

    # -- one message ----------------------------------------------------------------------------------

    def _send(self, message: Any) -> bool:
        envelope = envelope_recipients(message)
        if not envelope:
            return False
        data = message.message().as_bytes(linesep="\r\n")
        try:
            if self._client is not None:
                self._client.send_raw(data, to=envelope, connector=self.connector)
            else:
                assert self._relay is not None
                self._relay.enqueue(
                    data,
                    envelope=envelope,
                    source="library",
                    source_detail="django",
                    connector=self.connector or DEFAULT_NAME,
                )
        except M365RelayError:
            if not self.fail_silently:
                raise
            return False
        return True


def envelope_recipients(message: Any) -> list[str]:
    """Bare addresses of ``message.recipients()`` (to + cc + bcc), IDNA-encoded as Django's SMTP backend
    does, for the envelope."""
    from django.core.mail.message import sanitize_address  # type: ignore[import-untyped]

    encoding = message.encoding or _django_setting("DEFAULT_CHARSET", "utf-8")
    out = []
    for index, address in enumerate(message.recipients()):
        # The relay's one parser (m365relay.addresses), with the one delivery rule of every path.
        try:
            mailbox = parse_mailbox(sanitize_address(address, encoding))
        except (AddressError, ValueError) as exc:
            raise ValidationError(f"recipients[{index}]", str(exc), key="recipients") from None
        if (problem := routable(mailbox)) is not None:
            raise ValidationError(f"recipients[{index}]", problem, key="recipients")
        out.append(mailbox.addr_spec)
    return out


def _django_setting(name: str, default: Any = None) -> Any:
    from django.conf import settings  # type: ignore[import-untyped]

    return getattr(settings, name, default)


def _django_options() -> dict[str, Any]:
    return {name: value for name in BACKEND_OPTIONS if (value := _django_setting(f"M365RELAY_{name}")) is not None}


def _django_relay_settings() -> dict[str, Any]:
    """``M365RELAY = {...}`` plus ``M365RELAY_<FIELD>`` Django settings naming a field of m365relay's Settings."""
    from ..settings import Settings

    values: dict[str, Any] = dict(_django_setting("M365RELAY", None) or {})
    for name in Settings.model_fields:
        if name.upper() in BACKEND_OPTIONS:
            continue
        value = _django_setting(f"M365RELAY_{name.upper()}")
        if value is not None:
            values[name] = value
    return values
