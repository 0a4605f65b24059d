"""Check 1: the connector screen is filled in and every field is well-formed — the same rules the screen
applies on save (``connectors/validation.py``), run again because a connector may have been stored by an
older version, edited in the database, or its CA file may have moved since."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clouds import resolve_cloud
from ..connectors import ConnectorConfig, Credential
from ..connectors import validation as rules
from ..connectors.certificates import load_pair
from ..errors import ValidationError
from ..homedir import loose_permissions
from ..homedir import remedy as home_remedy
from .result import CheckResult, result

NO_CREDENTIAL_REMEDY = (
    "Create a client secret (manual, Create Client Secret): in the Azure portal open the app > Certificates & "
    "secrets > New client secret, choose Expires (24 months at most), click Add and copy the Value — it is "
    "shown only once. Store it with its expiry date: printf '%s' \"$VALUE\" | m365relay connector set "
    "--secret-stdin --secret-expires YYYY-MM-DD (or the 'Public Key (secret)' field on the connector page). "
    "Or use a certificate instead: m365relay cert new."
)


@dataclass(frozen=True)
class ConfigOutcome:
    result: CheckResult
    fields_ok: bool  # ids, mailbox address and cloud: the tenant and app checks can run
    credential_ok: bool  # a usable secret or certificate is stored: the token checks can run


def check_config(connector: ConnectorConfig, home: Path | None = None) -> ConfigOutcome:
    """``home``: the data directory, whose permissions are checked too (a warning: mail still flows)."""
    problems = _field_problems(connector)
    cred_problem, cred_note = _credential_problem(connector.credential)
    loose = loose_permissions(home) if home is not None else []
    loose += _private_endpoints(connector)
    if loose:
        said = "; ".join(loose)
        said = said[0].upper() + said[1:]
        fix = f"Protect the data directory: {home_remedy(home)}." if home is not None else ""
        if _private_endpoints(connector):
            fix = f"{fix} Check that the custom cloud's URLs are the endpoints you mean.".strip()
        cred_note = (f"{cred_note[0]}. {said}", f"{cred_note[1]} {fix}") if cred_note else (said, fix)
    if problems:
        everything = problems + ([cred_problem] if cred_problem else [])
        detail = "; ".join(everything)
        remedy = (
            "Correct the field(s) on the connector page or with m365relay connector set: the OAuth Client ID is "
            "the Application (client) ID and the Tenant ID the Directory (tenant) ID, both on the app's Overview "
            "page in Azure; the User Name is the system mailbox's address."
        )
        return ConfigOutcome(result("config", "fail", detail, remedy, problems=everything), False, False)
    if cred_problem:
        remedy = NO_CREDENTIAL_REMEDY if connector.credential is None else _bad_certificate_remedy()
        return ConfigOutcome(result("config", "fail", cred_problem, remedy), True, False)
    found = f"client id, tenant id, mailbox {connector.user_name} and cloud {connector.cloud.name} are well-formed"
    cred = connector.credential
    assert cred is not None
    detail = f"{found}; credential: {cred.describe()}"
    if cred_note:
        return ConfigOutcome(result("config", "warn", f"{detail}. {cred_note[0]}", cred_note[1]), True, True)
    return ConfigOutcome(result("config", "pass", detail), True, True)


def _private_endpoints(connector: ConnectorConfig) -> list[str]:
    cloud = connector.cloud
    if cloud.name != "custom":
        return []
    found = []
    for what, url in (("login URL", cloud.login_url), ("Graph URL", cloud.graph_url)):
        try:
            note = rules.endpoint_host(what, url)
        except ValidationError:
            continue  # reported as a field problem
        if note:
            found.append(note)
    return found


def _field_problems(connector: ConnectorConfig) -> list[str]:
    problems: list[str] = []
    checks: list[tuple[Callable[[Any], object], Any]] = [
        (rules.client_id, connector.client_id),
        (rules.tenant_id, connector.tenant_id),
        (rules.user_name, connector.user_name),
    ]
    cloud = connector.cloud
    if cloud.name == "custom":
        checks.append((lambda c: resolve_cloud("custom", login_url=c.login_url, graph_url=c.graph_url), cloud))
        checks.append((lambda c: rules.endpoint_host("login URL", c.login_url), cloud))
        checks.append((lambda c: rules.endpoint_host("Graph URL", c.graph_url), cloud))
    else:
        checks.append((resolve_cloud, cloud.name))
    if cloud.ca_file is not None:
        checks.append((rules.ca_file, cloud.ca_file))
    for rule, value in checks:
        try:
            rule(value)
        except ValidationError as exc:
            problems.append(exc.message)
    return problems


def _credential_problem(cred: Credential | None) -> tuple[str | None, tuple[str, str] | None]:
    """(a problem that makes the credential unusable, or a (note, remedy) worth a warning)."""
    if cred is None:
        return "no client secret or certificate is stored", None
    if cred.kind == "certificate":
        try:
            load_pair(cred.certificate_pem or "", cred.private_key.reveal() if cred.private_key else "")
        except ValidationError as exc:
            return f"the stored certificate cannot be used: {exc.message}", None
        return None, None
    value = cred.secret.reveal() if cred.secret else ""
    try:
        rules.client_secret(value)
    except ValidationError as exc:
        # Not a failure yet: Microsoft is the judge (check 4); this says what to suspect.
        return None, (
            f"The stored secret is suspicious — {exc.reason}",
            "If check 4 fails, create a new client secret and store its Value (not the Secret ID).",
        )
    if cred.expires_at is None:
        return None, (
            "The secret's expiry date is not recorded, so m365relay cannot warn before it expires",
            "Record the Expires date shown in Certificates & secrets: m365relay connector set --secret-expires "
            "YYYY-MM-DD.",
        )
    return None, None


def _bad_certificate_remedy() -> str:
    return (
        "Store a matching certificate and private key (PEM, RSA): m365relay connector set --certificate "
        "CERT.pem --private-key KEY.pem, or create a new pair with m365relay cert new and upload its "
        "certificate in Azure (Certificates & secrets > Certificates > Upload certificate)."
    )
