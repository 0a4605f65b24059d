"""``m365relay cert new`` — a key pair and self-signed certificate for the connector's app registration.

The certificate (public) is written to a file to upload in Azure; the private key never touches the disk
in the clear: it is stored encrypted with the connector, like a client secret. Entra needs no CA-signed
certificate for client credentials, and a certificate may live longer than a secret's 24 months.

If the connector already has a credential in use, the new certificate is *staged* (the rotation's next
slot): sending goes on with the current credential until the certificate is uploaded and
``m365relay connector rotate`` has proven it — switching at once would stop mail until the upload.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..connectors import DEFAULT_NAME, ConnectorUpdate
from ..connectors.certificates import CertificateInfo, generate_self_signed
from ..errors import ValidationError
from .state import state

out = Console(highlight=False, soft_wrap=True)
MAX_DAYS = 3650
group = typer.Typer(
    help="Certificates for the connector's app registration (instead of a client secret).", no_args_is_help=True
)


@group.command("new")
def new(
    ctx: typer.Context,
    days: Annotated[int, typer.Option("--days", help="Validity in days (1–3650).")] = 365,
    name: Annotated[str, typer.Option("--name", help="Connector that will use the certificate.")] = DEFAULT_NAME,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Directory for the certificate file (default: HOME/certificates).", metavar="DIR"),
    ] = None,
    now: Annotated[
        bool,
        typer.Option("--now", help="Use it at once even if another credential is in use (mail stops until uploaded)."),
    ] = False,
) -> None:
    """Create a key pair and a self-signed certificate, write the certificate to upload in Azure, print its
    thumbprint as the portal shows it, and configure the connector to use it."""
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError("--days", f"must be between 1 and {MAX_DAYS}")
    runtime = state(ctx).runtime
    connector = runtime.connectors.get(name)  # the ids come first, as in the manual
    info = generate_self_signed(f"m365relay {connector.name} ({socket.gethostname()})", days)
    path = _write_certificate(out_dir or runtime.settings.home / "certificates", connector.name, info)
    change = ConnectorUpdate(certificate=info)
    staged = connector.credential is not None and not now
    if staged:
        runtime.connectors.stage_next(name, change, actor="cli")
    else:
        runtime.connectors.save(name, change, actor="cli")
    out.print(f"created certificate [bold]{escape(info.subject)}[/], valid until {info.not_after.date().isoformat()}")
    out.print(f"certificate file to upload: {escape(str(path))}")
    out.print(f"SHA-1 thumbprint (as the Azure portal shows it): {info.thumbprint_sha1}")
    out.print(f"SHA-256 thumbprint: {info.thumbprint_sha256}")
    out.print(
        "upload it: Azure portal > App registrations > the app > Certificates & secrets > Certificates > "
        "Upload certificate"
    )
    if staged:
        out.print(
            f"[cyan]staged[/] as connector {escape(connector.name)}'s next credential; the current one stays in use. "
            f"After the upload, switch without interrupting mail: m365relay connector rotate --name {connector.name}"
        )
    else:
        out.print(
            f"connector {escape(connector.name)} now uses this certificate; after the upload check it: m365relay doctor"
        )


def _write_certificate(directory: Path, connector: str, info: CertificateInfo) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"m365relay-{connector}-{info.thumbprint_sha1[:8].lower()}.pem"
    try:
        # O_EXCL: never overwrite a certificate file an admin may still need.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise ValidationError("--out", f"{str(path)!r} exists already") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(info.certificate_pem)
    return path.resolve()


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="cert")
