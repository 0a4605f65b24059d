"""The rules for the connector screen's fields. Each failure names the field as the manual does and says,
in plain words, what is wrong; the same rules serve the CLI, the admin UI and the API.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ValidationError

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# RFC 1035 labels, at least two, an alphabetic TLD: "contoso.onmicrosoft.com". The tenant is pasted into
# a URL path, so anything else (slashes, dots-only, percent signs, spaces) must never pass.
DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 dot-atom local part; Exchange Online addresses are ASCII.
LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
SECRET_CHARS = re.compile(r"^[\x21-\x7e]+$")
MULTI_TENANT_ALIASES = {"common", "organizations", "consumers"}
MAX_SECRET_MONTHS = 24


def client_id(value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError(
            "OAuth Client ID", "is required: copy the Application (client) ID from the app's Overview"
        )
    if not GUID.match(value):
        raise ValidationError(
            "OAuth Client ID",
            "must be a GUID like 11111111-2222-3333-4444-555555555555 (the Application (client) ID "
            "on the app's Overview page)",
        )
    return value.lower()


def tenant_id(value: str) -> str:
    value = (value or "").strip()
    field = "Tenant ID"
    if not value:
        raise ValidationError(field, "is required: copy the Directory (tenant) ID from the app's Overview")
    if value.lower() in MULTI_TENANT_ALIASES:
        raise ValidationError(
            field,
            f"{value!r} is not allowed: an application sending as itself must name its own tenant; "
            "use the Directory (tenant) ID GUID",
        )
    if GUID.match(value):
        return value.lower()
    if _is_domain(value.lower()):
        return value.lower()
    raise ValidationError(
        field, "must be the Directory (tenant) ID GUID or a verified domain such as contoso.onmicrosoft.com"
    )


def user_name(value: str) -> str:
    value = (value or "").strip()
    field = "User Name"
    if not value:
        raise ValidationError(field, "is required: the address of the system mailbox, e.g. noreply@contoso.com")
    if value.count("@") != 1:
        raise ValidationError(field, "must be one mailbox address such as noreply@contoso.com")
    local, domain = value.split("@")
    if not LOCAL_PART.match(local) or len(local) > 64 or not _is_domain(domain.lower()):
        raise ValidationError(field, f"{value!r} is not a valid mailbox address (e.g. noreply@contoso.com)")
    return f"{local}@{domain.lower()}"


def client_secret(value: str) -> str:
    value = (value or "").strip()
    field = "Public Key (secret)"
    if not value:
        raise ValidationError(field, "is required: the Value of a client secret from Certificates & secrets")
    if GUID.match(value):
        raise ValidationError(
            field,
            "this looks like the Secret ID; paste the secret's Value (Certificates & secrets > Client "
            "secrets > the Value column, shown only right after you create the secret)",
        )
    if not SECRET_CHARS.match(value) or len(value) < 16 or len(value) > 256:
        raise ValidationError(field, "does not look like a client secret Value (16–256 visible characters)")
    return value


def secret_expiry(value: date | str | None, *, today: date | None = None) -> date:
    """The expiry date the portal showed; must lie between today and 24 months from today."""
    field = "Secret expires"
    today = today or datetime.now(UTC).date()
    if value is None or value == "":
        raise ValidationError(field, "is required: the Expires date shown in Certificates & secrets")
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValidationError(field, f"{value!r} is not a date; use YYYY-MM-DD") from exc
    if value < today:
        raise ValidationError(
            field, f"{value.isoformat()} is in the past: the secret has expired; create a new one in Azure"
        )
    limit = add_months(today, MAX_SECRET_MONTHS)
    if value > limit:
        raise ValidationError(
            field,
            f"{value.isoformat()} is more than 24 months ahead (latest {limit.isoformat()}); Azure client "
            "secrets last at most 24 months; check the date",
        )
    return value


MAX_CA_FILE_BYTES = 1024 * 1024


def ca_file(value: str | Path | None) -> Path | None:
    """A readable PEM file of CA certificates. Every failure gives the same answer: an admin screen must not
    tell whether some file exists or may be read (a way to probe the server's file system)."""
    if value is None or str(value).strip() == "":
        return None
    path = Path(str(value).strip()).expanduser()
    refusal = ValidationError("CA file", f"{str(path)!r} is not a readable PEM file of CA certificates")
    try:
        if not path.is_file():  # not a directory, FIFO or device (a FIFO would block the read)
            raise refusal
        with path.open("rb") as handle:
            text = handle.read(MAX_CA_FILE_BYTES)
    except OSError:
        raise refusal from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise refusal
    return path.resolve()


# Hosts a custom cloud may never name: link-local (cloud metadata services live at 169.254.169.254 and
# fd00:ec2::254), "this network", multicast, and the metadata names. The relay would send the client
# secret and then mail there.
_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "224.0.0.0/4", "ff00::/8", "fd00:ec2::254/128", "::/128")
)
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.azure.com", "instance-data"})


def endpoint_host(what: str, url: str) -> str | None:
    """Refuse a custom cloud URL whose host is link-local or a metadata service; for a private address, the
    warning to show (None when there is nothing to say). Names are judged as written, not resolved."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host in _METADATA_NAMES or host.endswith(".internal"):
            raise ValidationError(what, f"must not name a cloud metadata service ({host})") from None
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in _FORBIDDEN_NETWORKS):
        raise ValidationError(
            what, f"must not be a link-local, metadata or unspecified address ({address}); use the endpoint's name"
        )
    if any(address in net for net in _PRIVATE_NETWORKS):
        return f"the {what} {url} is a private address ({address}): make sure it is the endpoint you mean"
    return None


CONNECTOR_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def connector_name(value: str) -> str:
    """A new connector's name: it goes into commands (``--name``) and admin URLs, and an all-digit name
    would read as a connector id, so lower-case letters, digits, ``.``, ``_`` and ``-`` with a letter."""
    value = (value or "").strip()
    if not value:
        raise ValidationError("Name", "is required: a short name such as billing or alerts")
    if not CONNECTOR_NAME.match(value) or value.isdigit():
        raise ValidationError(
            "Name",
            f"{value!r} is not allowed: use 1–64 lower-case letters, digits, '.', '_' or '-', starting with a "
            "letter or digit and not only digits (e.g. billing)",
        )
    return value


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _is_domain(value: str) -> bool:
    labels = value.split(".")
    return (
        3 <= len(value) <= 253
        and len(labels) >= 2
        and all(DNS_LABEL.match(label) for label in labels)
        and labels[-1].isalpha()
    )


def send_as(values: list[str] | tuple[str, ...] | str) -> list[str]:
    """The connector's further sending mailboxes ("Also send from"): full addresses or ``@domain`` for every
    mailbox of a domain, one a line or comma-separated. Stored lower-case, de-duplicated, in the order given.
    Each is its own ``/users/{mailbox}/sendMail`` (PROTOCOL.md §15), so an address must be one mailbox."""
    field = "Also send from"
    if isinstance(values, str):
        values = [values]
    entries = [part.strip() for value in values for part in value.replace(",", "\n").splitlines()]
    result: list[str] = []
    for entry in (e for e in entries if e):
        if entry.startswith("@"):
            domain = entry[1:].lower()
            if not _is_domain(domain):
                raise ValidationError(
                    field, f"{entry!r} is not a domain; write @contoso.com for a whole domain", key="send_as"
                )
            cleaned = "@" + domain
        else:
            try:
                cleaned = user_name(entry).lower()
            except ValidationError as exc:
                raise ValidationError(
                    field,
                    f"{entry!r} is not a mailbox address (e.g. billing@contoso.com) or a domain (@contoso.com)",
                    key="send_as",
                ) from exc
        if cleaned not in result:
            result.append(cleaned)
    if len(result) > MAX_SEND_AS:
        raise ValidationError(
            field, f"{len(result)} entries; at most {MAX_SEND_AS} (use @domain for many mailboxes)", key="send_as"
        )
    return result


MAX_SEND_AS = 100
