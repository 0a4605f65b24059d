"""Connector records as the rest of the relay sees them: frozen, with credentials decrypted but wrapped in
``Secret`` so that printing a connector never prints a secret.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from ..clouds import Cloud
from ..errors import CredentialUnreadableError
from .secretbox import Secret


@dataclass(frozen=True)
class Credential:
    id: int
    slot: str  # current | next | old
    kind: str  # secret | certificate
    secret: Secret | None
    private_key: Secret | None
    certificate_pem: str | None
    thumbprint_sha1: str | None
    thumbprint_sha256: str | None
    hint: str | None
    expires_at: datetime | None
    created_at: datetime
    verified_at: datetime | None
    warned_days: int | None
    unreadable: bool = False  # the ciphertext did not decrypt with this server's key

    @property
    def expires_on(self) -> date | None:
        return self.expires_at.date() if self.expires_at else None

    def days_left(self, now: datetime | None = None) -> int | None:
        if self.expires_at is None:
            return None
        return (self.expires_at.date() - (now or datetime.now(UTC)).date()).days

    def msal_credential(self) -> str | dict[str, str]:
        """What ``msal.ConfidentialClientApplication(client_credential=…)`` takes (PROTOCOL.md §11)."""
        if self.unreadable:
            raise CredentialUnreadableError(f"the stored {self.kind} of this connector cannot be decrypted")
        if self.kind == "secret":
            assert self.secret is not None
            return self.secret.reveal()
        assert self.private_key is not None and self.certificate_pem is not None
        # private_key + public_certificate → PS256 with x5t#S256 and x5c (the current form).
        return {"private_key": self.private_key.reveal(), "public_certificate": self.certificate_pem}

    def describe(self) -> str:
        """Safe one-line description: never the value."""
        if self.kind == "secret":
            return f"client secret {self.hint or ''}…" if self.hint else "client secret"
        return f"certificate {self.thumbprint_sha1}"


@dataclass(frozen=True)
class ConnectorConfig:
    id: int
    name: str
    client_id: str
    tenant_id: str
    user_name: str
    cloud: Cloud
    state: str
    state_reason: str | None
    state_error_kind: str | None
    state_error_code: str | None
    state_remedy: str | None
    state_changed_at: datetime | None
    next_probe_at: datetime | None
    probe_attempts: int
    consent_granted_at: datetime | None
    config_version: int
    credential: Credential | None
    next_credential: Credential | None
    old_credential: Credential | None
    created_at: datetime
    updated_at: datetime
    send_as: tuple[str, ...] = ()  # further mailboxes ("Also send from"): addresses or "@domain"

    @property
    def paused(self) -> bool:
        return self.state == "paused"

    @property
    def token_key(self) -> str:
        """Changes whenever anything a token depends on changes: providers rebuild their MSAL app."""
        cred = self.credential
        parts = [
            str(self.id),
            str(self.config_version),
            self.client_id,
            self.tenant_id,
            self.cloud.login_url,
            self.cloud.graph_url,
            self.cloud.graph_resource,
            str(self.cloud.ca_file),
            str(cred.id if cred else None),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def mailbox_for(self, sender: str | None) -> str:
        """The mailbox whose ``/users/{mailbox}/sendMail`` sends mail From ``sender``: the address itself
        when it is a send-as entry (or of a send-as ``@domain``), else the User Name mailbox. Returns "" for
        the User Name mailbox, so that its limits keep their key when the User Name changes."""
        address = (sender or "").strip().lower()
        if not address or address == self.user_name.lower() or "@" not in address:
            return ""
        if address in self.send_as or "@" + address.rpartition("@")[2] in self.send_as:
            return address
        return ""

    def mailbox_address(self, mailbox: str) -> str:
        """The address in the Graph URL for a ``mailbox_for`` result."""
        return mailbox or self.user_name

    @property
    def known_mailboxes(self) -> tuple[str, ...]:
        """The mailboxes known before any mail arrives: the User Name ("") and each listed address."""
        return ("", *(entry for entry in self.send_as if not entry.startswith("@")))

    def public_view(self, now: datetime | None = None) -> dict[str, Any]:
        """Everything an administrator may see (CLI ``show``, API, UI). No secret values."""
        now = now or datetime.now(UTC)

        def cred_view(c: Credential | None) -> dict[str, Any] | None:
            if c is None:
                return None
            return {
                "kind": c.kind,
                "description": c.describe(),
                "hint": c.hint,
                "thumbprint_sha1": c.thumbprint_sha1,
                "thumbprint_sha256": c.thumbprint_sha256,
                "set_on": c.created_at.date().isoformat(),
                "expires_on": c.expires_on.isoformat() if c.expires_on else None,
                "days_left": c.days_left(now),
                "verified_at": c.verified_at.isoformat() if c.verified_at else None,
            }

        return {
            "id": self.id,
            "name": self.name,
            "client_id": self.client_id,
            "tenant_id": self.tenant_id,
            "user_name": self.user_name,
            "send_as": list(self.send_as),
            "cloud": self.cloud.name,
            "login_url": self.cloud.login_url,
            "graph_url": self.cloud.graph_url,
            "graph_resource": self.cloud.graph_resource,
            "ca_file": str(self.cloud.ca_file) if self.cloud.ca_file else None,
            "state": self.state,
            "state_reason": self.state_reason,
            "state_error_kind": self.state_error_kind,
            "state_error_code": self.state_error_code,
            "state_remedy": self.state_remedy,
            "state_changed_at": self.state_changed_at.isoformat() if self.state_changed_at else None,
            "next_probe_at": self.next_probe_at.isoformat() if self.next_probe_at else None,
            "consent_granted_at": self.consent_granted_at.isoformat() if self.consent_granted_at else None,
            "credential": cred_view(self.credential),
            "next_credential": cred_view(self.next_credential),
            "old_credential": cred_view(self.old_credential),
            "updated_at": self.updated_at.isoformat(),
        }
