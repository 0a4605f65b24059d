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
    mime: bytes | None = None  # a draft created from MIME (POST messages, Content-Type: text/plain)
    internet_message_id: str = ""  # assigned at creation; the sent message keeps it [obs]


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


MAX_DRAFTS = 10_000  # a client that never sends its drafts must not grow the sandbox forever


class DraftStore:
    def __init__(self) -> None:
        self.drafts: dict[str, Draft] = {}
        self.sessions: dict[str, UploadSession] = {}

    def add_draft(self, draft: Draft) -> None:
        self.drafts[draft.id] = draft
        while len(self.drafts) > MAX_DRAFTS:
            del self.drafts[next(iter(self.drafts))]

    def add_session(self, session: UploadSession, now: float) -> None:
        """Register a session, forgetting the expired ones (they hold up to 150 MB each)."""
        for token in [t for t, s in self.sessions.items() if s.expires < now]:
            del self.sessions[token]
        self.sessions[session.token] = session

    def clear(self) -> None:
        self.drafts.clear()
        self.sessions.clear()
