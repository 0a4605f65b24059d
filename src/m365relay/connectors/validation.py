"""The rules for the connector screen's fields. Each failure names the field as the manual does and says,
in plain words, what is wrong; the same rules serve the CLI, the admin UI and the API.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

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


def ca_file(value: str | Path | None) -> Path | None:
    if value is None or str(value).strip() == "":
        return None
    path = Path(str(value).strip()).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationError("CA file", f"cannot read {str(path)!r}: {exc.strerror}") from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValidationError("CA file", f"{str(path)!r} contains no PEM certificate")
    return path.resolve()


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
