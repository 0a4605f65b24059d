"""The send-as tests' tenant: the demo's User Name mailbox plus two shared mailboxes (PROTOCOL.md §15)."""

from __future__ import annotations

DOMAIN = "contoso.onmicrosoft.com"
BILLING = f"billing@{DOMAIN}"
ALERTS = f"alerts@{DOMAIN}"
