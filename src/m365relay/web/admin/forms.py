"""The connector screen's form: what the administrator typed → a ``ConnectorUpdate``, and the core's
validation errors → a message next to each field.

Everything typed comes back into the form after an error, except the secret and the key passphrase: those
are never written into a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...connectors import ConnectorUpdate
from ...connectors.certificates import CertificateInfo, load_pair
from ...errors import ValidationError
from .context import AdminContext

TEXT_FIELDS = (
    "client_id",
    "tenant_id",
    "user_name",
    "secret_expires",
    "cloud",
    "login_url",
    "graph_url",
    "graph_resource",
    "ca_file",
    "send_as",
)
CUSTOM_ONLY = ("login_url", "graph_url", "graph_resource", "ca_file")
# Keys the core's errors carry, mapped to the form field they belong next to.
ERROR_KEYS = {"Certificate": "certificate", "Private key": "private_key", "Credential": "secret"}
FIELD_KEYS = {*TEXT_FIELDS, "name", "secret", "certificate", "private_key", "send_test_to", "to"}
MAX_PEM_BYTES = 64 * 1024  # a certificate or key in PEM is a few kB; a chain a little more
VERBS = ("is ", "must ", "does ", "cannot ", "contains ", "has ")


@dataclass
class ConnectorForm:
    values: dict[str, str]  # as typed (for redisplay); never the secret
    secret: str
    certificate: CertificateInfo | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def secret_given(self) -> bool:
        return bool(self.secret.strip())

    def update(self) -> ConnectorUpdate:
        v = self.values
        cloud = v.get("cloud") or "global"
        custom = {key: (v.get(key, "") if cloud == "custom" else "") for key in CUSTOM_ONLY}
        return ConnectorUpdate(
            client_id=v.get("client_id", ""),
            tenant_id=v.get("tenant_id", ""),
            user_name=v.get("user_name", ""),
            cloud=cloud,
            login_url=custom["login_url"],
            graph_url=custom["graph_url"],
            graph_resource=custom["graph_resource"],
            ca_file=custom["ca_file"],
            secret=self.secret.strip() or None,
            secret_expires=v.get("secret_expires") or None,
            certificate=self.certificate,
            # One a line; an empty box clears the list, a form without the box keeps it.
            send_as=[v["send_as"]] if "send_as" in v else None,
        )


async def read_connector_form(ctx: AdminContext) -> ConnectorForm:
    """The submitted fields; a certificate upload is loaded and checked here (its errors in ``errors``)."""
    submitted = [name for name in TEXT_FIELDS if name != "send_as" or (ctx.form is not None and name in ctx.form)]
    form = ConnectorForm(values={name: ctx.field(name) for name in submitted}, secret=ctx.field("secret"))
    cert_file, key_file = ctx.upload("certificate"), ctx.upload("private_key")
    if cert_file is None and key_file is None:
        return form
    if cert_file is None:
        form.errors["certificate"] = "Certificate: choose the certificate file (PEM) that goes with the private key"
        return form
    if key_file is None:
        form.errors["private_key"] = "Private key: choose the private key file (PEM) that goes with the certificate"
        return form
    cert, key = await cert_file.read(MAX_PEM_BYTES + 1), await key_file.read(MAX_PEM_BYTES + 1)
    for name, data, what in (("certificate", cert, "Certificate"), ("private_key", key, "Private key")):
        if len(data) > MAX_PEM_BYTES:
            form.errors[name] = f"{what}: the file is larger than {MAX_PEM_BYTES // 1024} kB; a PEM file is a few kB"
    if form.errors:
        return form
    try:
        form.certificate = load_pair(cert, key, ctx.field("key_passphrase") or None)
    except ValidationError as exc:
        form.errors.update(field_errors(exc))
    return form


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Every error of a (combined) ValidationError, keyed by form field, in plain words."""
    found: dict[str, str] = {}
    for error in exc.all_errors:
        key = ERROR_KEYS.get(error.key, error.key)
        if key not in FIELD_KEYS:
            key = ERROR_KEYS.get(error.field, "form")
        found.setdefault(key, plain(error))
    return found


def plain(error: ValidationError) -> str:
    """ "OAuth Client ID is required: …" reads better than "OAuth Client ID: is required: …"."""
    if error.reason.startswith(VERBS):
        return f"{error.field} {error.reason}"
    return f"{error.field}: {error.reason}"
