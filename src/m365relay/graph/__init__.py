"""Microsoft Graph mail: the sender, message preparation, and the translation of Graph's errors."""

from __future__ import annotations

from .mime import OutgoingMessage, align_recipients
from .sender import GraphSender, SendResult

__all__ = ["GraphSender", "OutgoingMessage", "SendResult", "align_recipients"]
