"""What one send shares between its Graph requests, below both ``sender`` and ``upload`` so that neither
imports the other (STYLE.md: no import circles): the call's state, and the request function's shape."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from ..auth.tokens import AccessToken
from ..connectors.model import ConnectorConfig

DraftHook = Callable[[str, "str | None"], Awaitable[None]]  # (draft id, its internetMessageId), before `send`


@dataclass
class Call:
    """Shared state of one send: the token, the request ids, and the 401 retry allowance."""

    connector: ConnectorConfig
    token: AccessToken
    mailbox: str = ""  # the address in /users/{mailbox}/; "" for the connector's User Name (PROTOCOL.md §15)
    client_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    request_ids: list[str] = field(default_factory=list)
    retried_auth: bool = False
    on_draft: DraftHook | None = None  # told a large message's draft id before its `send` (in-doubt checks)


class Requester(Protocol):
    """``GraphSender.request``: one Graph request, 401 retried once, failures raised as ``DeliveryError``."""

    async def request(
        self,
        call: Call,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        absolute_url: str | None = None,
        authorize: bool = True,
    ) -> httpx.Response: ...
