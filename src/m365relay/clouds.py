"""Where each Microsoft cloud lives. Endpoints are data: nothing else in m365relay names a Microsoft host.

Source: PROTOCOL.md §8 (learn.microsoft.com/graph/deployments, …/authentication-national-cloud).
A ``custom`` cloud takes its login URL, Graph URL and CA file from the connector — that is how the
sandbox, a reverse proxy, or a future cloud is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import ValidationError

GRAPH_APP_ID: Final = "00000003-0000-0000-c000-000000000000"
MAIL_SEND_ROLE_ID: Final = "b633e1c5-b582-4048-a93e-9f11b44c7e96"


@dataclass(frozen=True)
class Cloud:
    name: str
    login_url: str  # e.g. https://login.microsoftonline.com (no trailing slash)
    graph_url: str  # e.g. https://graph.microsoft.com
    title: str
    portal_url: str = ""
    instance_name: str = ""  # the cloud_instance_name OIDC discovery reports for this cloud's tenants
    ca_file: Path | None = None
    # The Graph *resource* tokens are issued for. For Microsoft's clouds it is the Graph URL; a custom cloud
    # (a proxy or API gateway in front of Graph) keeps the real resource, because Entra only knows the
    # resource principal of Graph itself: a scope built from the proxy's URL gets AADSTS500011 (PROTOCOL.md §14).
    resource: str = ""

    @property
    def graph_resource(self) -> str:
        return self.resource or self.graph_url

    @property
    def scope(self) -> str:
        """The app-only scope for Graph in this cloud (PROTOCOL.md §1: ``{resource}/.default``)."""
        return f"{self.graph_resource}/.default"

    def authority(self, tenant: str) -> str:
        return f"{self.login_url}/{tenant}"

    def token_url(self, tenant: str) -> str:
        return f"{self.login_url}/{tenant}/oauth2/v2.0/token"

    def discovery_url(self, tenant: str) -> str:
        return f"{self.login_url}/{tenant}/v2.0/.well-known/openid-configuration"

    def admin_consent_url(self, tenant: str) -> str:
        return f"{self.login_url}/{tenant}/v2.0/adminconsent"


CLOUDS: Final[dict[str, Cloud]] = {
    "global": Cloud(
        "global",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "Global (incl. GCC)",
        "https://portal.azure.com",
        "microsoftonline.com",
    ),
    "usgov-high": Cloud(
        "usgov-high",
        "https://login.microsoftonline.us",
        "https://graph.microsoft.us",
        "US Government L4 (GCC High)",
        "https://portal.azure.us",
        "microsoftonline.us",
    ),
    "usgov-dod": Cloud(
        "usgov-dod",
        "https://login.microsoftonline.us",
        "https://dod-graph.microsoft.us",
        "US Government L5 (DoD)",
        "https://portal.azure.us",
        "microsoftonline.us",
    ),
    "china": Cloud(
        "china",
        "https://login.partner.microsoftonline.cn",
        "https://microsoftgraph.chinacloudapi.cn",
        "China (operated by 21Vianet)",
        "https://portal.azure.cn",
        "partner.microsoftonline.cn",
    ),
}
CLOUD_NAMES: Final = (*CLOUDS, "custom")
DEFAULT_GRAPH_RESOURCE: Final = CLOUDS["global"].graph_url


def cloud_for_instance(instance_name: str) -> list[Cloud]:
    """The clouds whose tenants discovery reports with this ``cloud_instance_name``."""
    return [c for c in CLOUDS.values() if c.instance_name == instance_name.lower()]


def resolve_cloud(
    name: str,
    *,
    login_url: str | None = None,
    graph_url: str | None = None,
    ca_file: Path | None = None,
    graph_resource: str | None = None,
) -> Cloud:
    """The Cloud for a connector. ``custom`` requires https login and Graph URLs (MSAL refuses http); its
    Graph resource defaults to the global cloud's (PROTOCOL.md §14)."""
    if name in CLOUDS:
        return CLOUDS[name]
    if name != "custom":
        raise ValidationError("cloud", f"unknown cloud {name!r}; choose one of {', '.join(CLOUD_NAMES)}")
    return Cloud(
        "custom",
        _https_base("login URL", login_url),
        _https_base("Graph URL", graph_url),
        "Custom endpoints",
        ca_file=ca_file,
        resource=_https_base("Graph resource", graph_resource) if graph_resource else DEFAULT_GRAPH_RESOURCE,
    )


def _https_base(what: str, url: str | None) -> str:
    from urllib.parse import urlsplit

    if not url:
        raise ValidationError(what, "is required when the cloud is custom")
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValidationError(what, f"must be an https:// URL (got {url!r}); Microsoft sign-in requires HTTPS")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationError(what, "must not contain credentials, a query or a fragment")
    return url.strip().rstrip("/")
