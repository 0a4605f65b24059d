"""Drafts and attachment upload sessions that live between createDraft and send."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .rfc5322 import AttachmentData


@dataclass(frozen=True)
class Draft:
    id: str
    mailbox: str
    client_id: str
    created: float
    message: dict[str, Any]
    attachments: tuple[AttachmentData, ...] = ()


@dataclass
class UploadSession:
    """Bytes received so far for one large attachment; grows chunk by chunk, in order."""

    id: str
    token: str
    draft_id: str
    mailbox: str
    name: str
    content_type: str
    size: int
    is_inline: bool
    content_id: str | None
    expires: float
    received: bytearray = field(default_factory=bytearray)


class DraftStore:
    def __init__(self) -> None:
        self.drafts: dict[str, Draft] = {}
        self.sessions: dict[str, UploadSession] = {}

    def clear(self) -> None:
        self.drafts.clear()
        self.sessions.clear()
