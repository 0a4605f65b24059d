"""Seeds: the `--demo` directory, seed files (JSON or TOML) and realistic secret values."""

from __future__ import annotations

import json
import secrets
import string
import tomllib
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from .clock import Clock, iso_z
from .directory import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_TOKEN_LIFETIME

DEMO_TENANT_ID = "9b2f6c41-7d3e-4a58-b1c9-2e8d5f0a7c36"
DEMO_CLIENT_ID = "4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71"
DEMO_DOMAIN = "contoso.onmicrosoft.com"
DEMO_MAILBOX = f"noreply@{DEMO_DOMAIN}"
DEMO_SEED_FILE = "demo-seed.json"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "_~.-"
_SECRET_LIFETIME = timedelta(days=730)  # 24 months, the portal's maximum (PROTOCOL.md §10)


def new_secret_value() -> str:
    """A value shaped like today's Entra secrets: 40 chars of [A-Za-z0-9_~.-], `Q~` after 3, a digit."""
    while True:
        head = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(3))
        tail = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(35))
        value = f"{head}Q~{tail}"
        if any(c.isdigit() for c in value):
            return value


def new_secret(clock: Clock, lifetime: timedelta = _SECRET_LIFETIME) -> dict[str, Any]:
    return {
        "secret_id": str(uuid.uuid4()),
        "value": new_secret_value(),
        "expires_at": iso_z(clock.now_dt() + lifetime),
    }


def demo_seed(clock: Clock) -> dict[str, Any]:
    """One tenant, one consented app with one fresh secret, one licensed mailbox."""
    return {
        "token_lifetime": DEFAULT_TOKEN_LIFETIME,
        "tenants": [{"id": DEMO_TENANT_ID, "domains": [DEMO_DOMAIN], "cloud": "global"}],
        "apps": [
            {
                "tenant": DEMO_TENANT_ID,
                "client_id": DEMO_CLIENT_ID,
                "display_name": "m365relay demo",
                "enabled": True,
                "redirect_uris": [],
                "requested_permissions": ["Mail.Send"],
                "granted_roles": ["Mail.Send"],
                "secrets": [new_secret(clock)],
                "certificates": [],
            }
        ],
        "mailboxes": [
            {
                "address": DEMO_MAILBOX,
                "tenant": DEMO_TENANT_ID,
                "licensed": True,
                "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
                "send_as": [],
                "display_name": "No Reply",
            }
        ],
        "access_policies": [],
    }


def load_demo_seed(data_dir: Path, clock: Clock) -> dict[str, Any]:
    """The demo seed of this data directory, created once so the secret survives restarts."""
    path = data_dir / DEMO_SEED_FILE
    if path.exists():
        loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return loaded
    seed = demo_seed(clock)
    path.write_text(json.dumps(seed, indent=2), "utf-8")
    path.chmod(0o600)  # it holds a secret value
    return seed


def load_seed_file(path: Path) -> dict[str, Any]:
    """Read a seed from JSON, or TOML when the file name ends in `.toml`."""
    text = path.read_text("utf-8")
    data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a seed must be an object with tenants, apps, mailboxes")
    return data


def demo_info(seed: dict[str, Any], url: str, ca_file: Path) -> dict[str, Any]:
    """The facts a person (or script) needs to point a client at the demo tenant."""
    tenant = seed["tenants"][0]
    app = seed["apps"][0]
    secret = app["secrets"][0] if app.get("secrets") else {}
    mailboxes = seed.get("mailboxes") or [{}]
    return {
        "url": url,
        "ca_file": str(ca_file),
        "tenant_id": tenant["id"],
        "tenant_domain": (tenant.get("domains") or [""])[0],
        "client_id": app["client_id"],
        "secret_value": secret.get("value", ""),
        "secret_id": secret.get("secret_id", ""),
        "mailbox": mailboxes[0].get("address", ""),
    }
