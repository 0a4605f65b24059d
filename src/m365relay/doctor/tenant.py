"""Check 2: the tenant exists, and in the connector's cloud — read from OpenID discovery
(PROTOCOL.md §3), fetched here directly rather than through MSAL so that its ``cloud_instance_name`` and
``tenant_region_scope`` can be compared with the cloud configured.

A tenant of another national cloud still answers discovery on any cloud's login host, describing its own
cloud [obs]; only the token request then fails (AADSTS900382). Reading discovery first lets the doctor say
"this tenant is in GCC High, choose usgov-high" instead of showing a bare code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from ..auth.translate import translate_discovery_failure
from ..clouds import CLOUDS, Cloud, cloud_for_instance
from ..connectors import ConnectorConfig
from ..errors import DeliveryError, TenantNotFoundError, TransientError
from ..net import translate_transport_error
from .result import CheckResult, result

# tenant_region_sub_scope tells the two US Government clouds apart: both report microsoftonline.us [obs].
SUB_SCOPES = {"DODCON": "usgov-high", "DOD": "usgov-dod"}
TENANT_REMEDY = (
    "Check the Directory (tenant) ID and the cloud: copy the Directory (tenant) ID again from the app's "
    "Overview page in the Azure portal, and check that the connector's cloud is the one the tenant lives in "
    "(global: portal.azure.com, usgov-high/usgov-dod: portal.azure.us, china: portal.azure.cn)."
)


@dataclass(frozen=True)
class Discovery:
    tenant_guid: str | None
    instance: str | None  # cloud_instance_name, e.g. microsoftonline.us
    region: str | None  # tenant_region_scope, e.g. USGov
    sub_scope: str | None  # tenant_region_sub_scope, e.g. DODCON

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> Discovery:
        issuer = str(doc.get("issuer") or "")
        parts = issuer.rstrip("/").split("/")
        guid = parts[-2] if len(parts) >= 2 and parts[-1] == "v2.0" else None

        def text(key: str) -> str | None:
            value = doc.get(key)
            return str(value) if value else None

        return cls(guid, text("cloud_instance_name"), text("tenant_region_scope"), text("tenant_region_sub_scope"))

    def clouds(self) -> list[Cloud]:
        """The national cloud(s) this discovery describes, narrowed by the sub-scope where it can be."""
        found = cloud_for_instance(self.instance or "")
        if self.sub_scope and self.sub_scope.upper() in SUB_SCOPES:
            narrowed = [c for c in found if c.name == SUB_SCOPES[self.sub_scope.upper()]]
            return narrowed or found
        return found

    def describe(self) -> str:
        scope = "/".join(p for p in (self.region, self.sub_scope) if p)
        return f"cloud_instance_name {self.instance}" + (f", tenant_region_scope {scope}" if scope else "")


@dataclass(frozen=True)
class TenantOutcome:
    result: CheckResult
    ok: bool  # later checks may run
    discovery: Discovery | None


async def check_tenant(connector: ConnectorConfig, client: httpx.AsyncClient) -> TenantOutcome:
    cloud = connector.cloud
    try:
        doc = await fetch_discovery(client, connector, connector.tenant_id)
    except DeliveryError as exc:
        return TenantOutcome(failure_result(exc, connector), False, None)
    found = Discovery.parse(doc)
    resolved = (
        f" (Directory (tenant) ID {found.tenant_guid})"
        if found.tenant_guid and found.tenant_guid != connector.tenant_id
        else ""
    )
    where = f"tenant {connector.tenant_id}{resolved} exists"
    expected = CLOUDS[cloud.name].instance_name if cloud.name in CLOUDS else await _host_instance(client, connector)
    data: dict[str, Any] = {
        "tenant_guid": found.tenant_guid,
        "cloud_instance_name": found.instance,
        "region": found.region,
    }
    if found.instance and expected and found.instance.lower() != expected.lower():
        return TenantOutcome(cross_cloud_result(connector, found, expected), False, found)
    suggested = found.clouds()
    if cloud.name in CLOUDS and len(suggested) == 1 and suggested[0].name != cloud.name:
        # Same sign-in host (both US Government clouds), but the Graph host differs.
        other = suggested[0]
        detail = (
            f"{where}, but it reports {found.describe()}, which is the {other.title} cloud; the connector is "
            f"set to {cloud.title}, whose Microsoft Graph is {cloud.graph_url}"
        )
        remedy = f"Set the connector's cloud to {other.name} (m365relay connector set --cloud {other.name})."
        return TenantOutcome(result("tenant", "warn", detail, remedy, suggested_cloud=other.name, **data), True, found)
    if not found.instance or not expected:
        detail = f"{where}; its cloud could not be compared (the sign-in host does not report one)"
        return TenantOutcome(result("tenant", "pass", detail, **data), True, found)
    return TenantOutcome(
        result("tenant", "pass", f"{where} in the {cloud.title} cloud ({found.instance})", **data), True, found
    )


async def fetch_discovery(client: httpx.AsyncClient, connector: ConnectorConfig, tenant: str) -> dict[str, Any]:
    """The discovery document, or the typed error (AADSTS90002 → TenantNotFoundError, …)."""
    url = connector.cloud.discovery_url(tenant)
    try:
        response = await client.get(url)
    except httpx.TransportError as exc:
        raise translate_transport_error(exc, "OpenID discovery") from exc
    if response.status_code != 200:
        raise translate_discovery_failure(response, connector)
    try:
        doc = json.loads(response.content)
    except ValueError as exc:
        raise TenantNotFoundError(
            f"the sign-in host {connector.cloud.login_url} answered discovery with something that is not JSON",
            remedy="Check the connector's login URL: it must be a Microsoft Entra sign-in host.",
        ) from exc
    if not isinstance(doc, dict):
        raise TenantNotFoundError(f"the sign-in host {connector.cloud.login_url} answered discovery oddly")
    return doc


async def _host_instance(client: httpx.AsyncClient, connector: ConnectorConfig) -> str | None:
    """For a custom cloud: the instance the sign-in host reports for itself (its ``organizations`` discovery)."""
    try:
        doc = await fetch_discovery(client, connector, "organizations")
    except DeliveryError:
        return None  # AADSTS900382 at the token step will still tell
    value = doc.get("cloud_instance_name")
    return str(value) if value else None


def cross_cloud_result(connector: ConnectorConfig, found: Discovery | None, expected: str | None) -> CheckResult:
    """The tenant lives in another national cloud than the connector is set to: say which, and what to choose."""
    cloud = connector.cloud
    clouds = found.clouds() if found is not None else []
    tenant_cloud = " or ".join(f"the {c.title} cloud ({c.name})" for c in clouds) or "another national cloud"
    reported = f" — discovery reports {found.describe()}" if found is not None and found.instance else ""
    serves = " or ".join(c.title for c in cloud_for_instance(expected or "")) or "another"
    host = f"{cloud.title} ({cloud.login_url}" + (
        f", which serves the {serves} cloud, {expected})" if expected else ")"
    )
    detail = (
        f"tenant {connector.tenant_id} belongs to {tenant_cloud}{reported}; the connector is set to "
        f"{host}. An app is registered in its own cloud's portal and tokens do not cross clouds"
    )
    if clouds:
        choice = clouds[0]
        remedy = (
            f"Set the connector's cloud to {choice.name} (m365relay connector set --cloud {choice.name}, or the "
            f"cloud field on the connector page), and make sure the app is registered in that cloud's portal "
            f"({choice.portal_url})."
        )
        if cloud.name == "custom":
            remedy += " For a custom cloud, point the login and Graph URLs at that cloud's endpoints instead."
    else:
        remedy = "Set the connector's cloud to the one the tenant lives in (global, usgov-high, usgov-dod, china)."
    return result(
        "tenant",
        "fail",
        detail,
        remedy,
        suggested_cloud=clouds[0].name if clouds else None,
        cloud_instance_name=found.instance if found else None,
        code="AADSTS900382" if found is None else None,
    )


def failure_result(error: DeliveryError, connector: ConnectorConfig) -> CheckResult:
    data: dict[str, Any] = {"code": error.code, "request_id": error.request_id}
    if isinstance(error, TransientError):
        data["transient"] = True
        return result("tenant", "fail", f"discovery failed: {error.message}", error.remedy, **data)
    if isinstance(error, TenantNotFoundError):
        where = f"in the {connector.cloud.title} cloud ({connector.cloud.login_url})"
        detail = f"{error.message} — tenant {connector.tenant_id} is unknown {where}"
        return result("tenant", "fail", detail, TENANT_REMEDY, **data)
    return result("tenant", "fail", f"discovery failed: {error.message}", error.remedy, **data)
