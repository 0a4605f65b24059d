"""Directory state: tenants, app registrations, mailboxes and access policies.

Records are frozen; the `Directory` container swaps whole records when the admin API changes one,
so a request that already holds a record never sees it half-updated. The dict shape read and
written here is the seed-file format and the body of `GET/PUT /_sandbox/state` (docs/sandbox.md).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from .clock import iso_z, parse_iso
from .pki import thumbprints

DEFAULT_MAX_MESSAGE_SIZE = 36_700_160  # 35 MB, the Exchange Online default
DEFAULT_TOKEN_LIFETIME = 3599
DEFAULT_SECRET_LIFETIME = timedelta(days=730)  # the portal's maximum, 24 months
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAMESPACE = uuid.UUID("6f1d3c52-8a0e-4e7b-9d51-3c7a2b0e9f14")


@dataclass(frozen=True)
class CloudInfo:
    """What discovery reports for a tenant of one national cloud (PROTOCOL.md §8)."""

    name: str
    cloud_instance_name: str
    tenant_region_scope: str
    tenant_region_sub_scope: str | None
    msgraph_host: str


CLOUDS: dict[str, CloudInfo] = {
    "global": CloudInfo("global", "microsoftonline.com", "NA", None, "graph.microsoft.com"),
    "usgov-high": CloudInfo("usgov-high", "microsoftonline.us", "USGov", "DODCON", "graph.microsoft.us"),
    "usgov-dod": CloudInfo("usgov-dod", "microsoftonline.us", "USGov", "DOD", "dod-graph.microsoft.us"),
    "china": CloudInfo("china", "partner.microsoftonline.cn", "AS", None, "microsoftgraph.chinacloudapi.cn"),
}


def stable_guid(*parts: str) -> str:
    """A GUID derived from names, so seeds without explicit object ids stay stable across runs."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(p.lower() for p in parts)))


def is_guid(text: str) -> bool:
    return bool(GUID_RE.match(text))


@dataclass(frozen=True)
class Limits:
    """Per app+mailbox and per mailbox limits (PROTOCOL.md §7); all configurable."""

    concurrency: int = 4
    requests_per_10min: int = 10_000
    recipients_per_24h: int = 10_000
    concurrency_retry_after: float = 1.0
    upload_min_size: int = 2_097_152  # [obs] smallest upload session Exchange accepted

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests_per_10min": self.requests_per_10min,
            "recipients_per_24h": self.recipients_per_24h,
            "concurrency_retry_after": self.concurrency_retry_after,
            "upload_min_size": self.upload_min_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Limits:
        data = data or {}
        base = cls()
        return cls(
            concurrency=int(data.get("concurrency", base.concurrency)),
            requests_per_10min=int(data.get("requests_per_10min", base.requests_per_10min)),
            recipients_per_24h=int(data.get("recipients_per_24h", base.recipients_per_24h)),
            concurrency_retry_after=float(data.get("concurrency_retry_after", base.concurrency_retry_after)),
            upload_min_size=int(data.get("upload_min_size", base.upload_min_size)),
        )


@dataclass(frozen=True)
class Tenant:
    id: str
    domains: tuple[str, ...]
    cloud: str = "global"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "domains": list(self.domains), "cloud": self.cloud}


@dataclass(frozen=True)
class Secret:
    secret_id: str
    value: str
    expires_at: datetime
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"secret_id": self.secret_id, "value": self.value, "expires_at": iso_z(self.expires_at)}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Certificate:
    pem: str
    expires_at: datetime | None
    thumbprint_sha1: str
    thumbprint_sha256: str
    public_key: CertificatePublicKeyTypes = field(compare=False, repr=False)

    @classmethod
    def from_pem(cls, pem: str, expires_at: str | None = None) -> Certificate:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"not a PEM certificate: {exc}") from exc
        sha1, sha256 = thumbprints(cert)
        expiry = parse_iso(expires_at) if expires_at else cert.not_valid_after_utc
        return cls(pem.strip() + "\n", expiry, sha1, sha256, cert.public_key())

    def to_dict(self) -> dict[str, Any]:
        return {
            "pem": self.pem,
            "expires_at": iso_z(self.expires_at) if self.expires_at else None,
            "thumbprint_sha1": self.thumbprint_sha1,
            "thumbprint_sha256": self.thumbprint_sha256,
        }


@dataclass(frozen=True)
class App:
    tenant: str
    client_id: str
    display_name: str
    enabled: bool = True
    redirect_uris: tuple[str, ...] = ()
    requested_permissions: tuple[str, ...] = ("Mail.Send",)
    granted_roles: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    object_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "client_id": self.client_id,
            "display_name": self.display_name,
            "enabled": self.enabled,
            "redirect_uris": list(self.redirect_uris),
            "requested_permissions": list(self.requested_permissions),
            "granted_roles": list(self.granted_roles),
            "secrets": [s.to_dict() for s in self.secrets],
            "certificates": [c.to_dict() for c in self.certificates],
            "object_id": self.object_id,
        }


@dataclass(frozen=True)
class Mailbox:
    address: str
    tenant: str
    id: str
    licensed: bool = True
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    send_as: tuple[str, ...] = ()
    display_name: str = ""

    def may_send_as(self, address: str) -> bool:
        wanted = address.lower()
        return wanted == self.address.lower() or wanted in (a.lower() for a in self.send_as)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "tenant": self.tenant,
            "id": self.id,
            "licensed": self.licensed,
            "max_message_size": self.max_message_size,
            "send_as": list(self.send_as),
            "display_name": self.display_name,
        }


@dataclass(frozen=True)
class AccessPolicy:
    """An Exchange application access policy: the app may only reach these mailboxes."""

    client_id: str
    allowed_mailboxes: tuple[str, ...]

    def allows(self, address: str) -> bool:
        return address.lower() in (a.lower() for a in self.allowed_mailboxes)

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "allowed_mailboxes": list(self.allowed_mailboxes)}


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(value)


def _guid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_guid(value):
        raise ValueError(f"{what} must be a GUID, got {value!r}")
    return value.lower()


def parse_tenant(data: dict[str, Any]) -> Tenant:
    cloud = str(data.get("cloud", "global"))
    if cloud not in CLOUDS:
        raise ValueError(f"unknown cloud {cloud!r}; one of {sorted(CLOUDS)}")
    domains = tuple(d.lower() for d in _strs(data.get("domains"), "tenant domains"))
    return Tenant(_guid(data.get("id"), "tenant id"), domains, cloud)


def parse_secret(data: dict[str, Any], client_id: str = "") -> Secret:
    """A secret; without `secret_id` one is derived from the value, without `expires_at` 24 months."""
    value = data.get("value")
    if not isinstance(value, str) or not value:
        raise ValueError("secret value must be a non-empty string")
    expires = data.get("expires_at")
    if expires is not None and not isinstance(expires, str):
        raise ValueError("secret expires_at must be an ISO-8601 string")
    secret_id = data.get("secret_id") or stable_guid("secret", client_id, value)
    expiry = parse_iso(expires) if expires else datetime.now(UTC) + DEFAULT_SECRET_LIFETIME
    return Secret(_guid(secret_id, "secret_id"), value, expiry, str(data.get("description") or ""))


def parse_app(data: dict[str, Any]) -> App:
    client_id = _guid(data.get("client_id"), "client_id")
    tenant = _guid(data.get("tenant"), "app tenant")
    certificates = tuple(
        Certificate.from_pem(str(c.get("pem", "")), c.get("expires_at")) for c in data.get("certificates") or []
    )
    return App(
        tenant=tenant,
        client_id=client_id,
        display_name=str(data.get("display_name") or "m365relay"),
        enabled=bool(data.get("enabled", True)),
        redirect_uris=_strs(data.get("redirect_uris"), "redirect_uris"),
        requested_permissions=_strs(data.get("requested_permissions", ["Mail.Send"]), "requested_permissions"),
        granted_roles=_strs(data.get("granted_roles"), "granted_roles"),
        secrets=tuple(parse_secret(s, client_id) for s in data.get("secrets") or []),
        certificates=certificates,
        object_id=str(data.get("object_id") or stable_guid("sp", tenant, client_id)),
    )


def parse_mailbox(data: dict[str, Any]) -> Mailbox:
    address = data.get("address")
    if not isinstance(address, str) or "@" not in address:
        raise ValueError(f"mailbox address must be an e-mail address, got {address!r}")
    tenant = _guid(data.get("tenant"), "mailbox tenant")
    return Mailbox(
        address=address,
        tenant=tenant,
        id=str(data.get("id") or stable_guid("mailbox", address)).lower(),
        licensed=bool(data.get("licensed", True)),
        max_message_size=int(data.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)),
        send_as=_strs(data.get("send_as"), "send_as"),
        display_name=str(data.get("display_name") or ""),
    )


def parse_policy(data: dict[str, Any]) -> AccessPolicy:
    return AccessPolicy(
        _guid(data.get("client_id"), "policy client_id"),
        _strs(data.get("allowed_mailboxes"), "allowed_mailboxes"),
    )


class Directory:
    """The whole directory; mutated only by the admin API, read by identity and Graph."""

    def __init__(self) -> None:
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME
        self.limits = Limits()
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.policies: dict[str, AccessPolicy] = {}
        self._mailbox_ids: dict[str, str] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Directory:
        """Build a directory from the seed/state shape; raises ValueError on bad input."""
        directory = cls()
        directory.token_lifetime = int(data.get("token_lifetime", DEFAULT_TOKEN_LIFETIME))
        if directory.token_lifetime <= 0:
            raise ValueError("token_lifetime must be positive")
        directory.limits = Limits.from_dict(data.get("limits"))
        for item in data.get("tenants") or []:
            directory.put_tenant(parse_tenant(item))
        for item in data.get("apps") or []:
            directory.put_app(parse_app(item))
        for item in data.get("mailboxes") or []:
            directory.put_mailbox(parse_mailbox(item))
        for item in data.get("access_policies") or []:
            directory.put_policy(parse_policy(item))
        return directory

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_lifetime": self.token_lifetime,
            "limits": self.limits.to_dict(),
            "tenants": [t.to_dict() for t in self.tenants.values()],
            "apps": [a.to_dict() for a in self.apps.values()],
            "mailboxes": [m.to_dict() for m in self.mailboxes.values()],
            "access_policies": [p.to_dict() for p in self.policies.values()],
        }

    # -- lookups ---------------------------------------------------------------------------------
    def find_tenant(self, ident: str) -> Tenant | None:
        """A tenant by GUID or by any of its verified domains (case-insensitive)."""
        key = ident.lower()
        if key in self.tenants:
            return self.tenants[key]
        for tenant in self.tenants.values():
            if key in tenant.domains:
                return tenant
        return None

    def find_app(self, tenant_id: str, client_id: str) -> App | None:
        app = self.apps.get(client_id.lower())
        return app if app is not None and app.tenant == tenant_id else None

    def find_mailbox(self, ident: str) -> Mailbox | None:
        """A mailbox by SMTP address or by its object id GUID, case-insensitively."""
        key = ident.lower()
        found = self.mailboxes.get(key)
        if found is None and key in self._mailbox_ids:
            found = self.mailboxes.get(self._mailbox_ids[key])
        return found

    # -- changes ---------------------------------------------------------------------------------
    def put_tenant(self, tenant: Tenant) -> None:
        self.tenants[tenant.id] = tenant

    def put_app(self, app: App) -> None:
        if app.tenant not in self.tenants:
            raise ValueError(f"app {app.client_id}: unknown tenant {app.tenant}")
        self.apps[app.client_id] = app

    def update_app(self, client_id: str, **changes: Any) -> App:
        app = self.apps.get(client_id.lower())
        if app is None:
            raise KeyError(client_id)
        updated = replace(app, **changes)
        self.apps[updated.client_id] = updated
        return updated

    def put_mailbox(self, mailbox: Mailbox) -> None:
        if mailbox.tenant not in self.tenants:
            raise ValueError(f"mailbox {mailbox.address}: unknown tenant {mailbox.tenant}")
        self.delete_mailbox(mailbox.address)
        self.mailboxes[mailbox.address.lower()] = mailbox
        self._mailbox_ids[mailbox.id] = mailbox.address.lower()

    def delete_mailbox(self, address: str) -> bool:
        old = self.mailboxes.pop(address.lower(), None)
        if old is not None:
            self._mailbox_ids.pop(old.id, None)
        return old is not None

    def put_policy(self, policy: AccessPolicy) -> None:
        self.policies[policy.client_id] = policy

    def delete_policy(self, client_id: str) -> bool:
        return self.policies.pop(client_id.lower(), None) is not None
