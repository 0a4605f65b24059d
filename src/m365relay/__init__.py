"""m365relay: send an application's system mail from a Microsoft 365 mailbox through Microsoft Graph."""

from __future__ import annotations

__version__ = "0.1.0"
