"""``m365relay demo``: the whole relay against a local Microsoft 365 sandbox, ready to try in one command.

It starts the sandbox in this process (its data in ``home/sandbox``), points the connector ``default`` at
it, makes sure a relay user ``demo`` and an administrator ``admin`` exist, runs ``serve`` (SMTP, HTTP API,
admin UI, dispatcher) and tells how to send a message and where to watch it arrive — on the terminal and
as JSON in ``home/demo.json`` (while it runs: a clean stop moves it aside). Running it again reuses
everything, including the passwords (checked against the last run's details, reset if they no longer work).

The demo may import the sandbox; the core never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .access.admins import AdminStore
from .access.passwords import generate_password
from .access.relay_users import RelayUserStore
from .connectors import DEFAULT_NAME, ConnectorConfig, ConnectorUpdate
from .connectors.validation import add_months
from .errors import ConflictError, ValidationError
from .lifecycle import consent_redirect_uri
from .runtime import Runtime
from .sandbox import SandboxServer
from .serve import Endpoints, serve
from .settings import Settings

log = logging.getLogger("m365relay.demo")
DEMO_FILE = "demo.json"
PREVIOUS_FILE = ".demo-previous.json"  # demo.json of a stopped demo: the passwords to reuse next time
DEMO_RELAY_USER = "demo"
DEMO_ADMIN = "admin"
DEFAULT_HTTP_PORT = 8025
DEFAULT_SMTP_PORT = 2525
DEFAULT_SANDBOX_PORT = 8443
TEST_SENDER = "app@example.com"
SEND_AS_LOCAL_PART = "billing"  # the demo tenant's second mailbox, listed as send-as (PROTOCOL.md §15)
TEST_RECIPIENT = "someone@example.com"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DemoInfo:
    """What demo.json holds (and the terminal shows)."""

    smtp_host: str
    smtp_port: int
    smtp_user: str
    smtp_password: str
    admin_url: str
    admin_user: str
    admin_password: str
    api_url: str
    sandbox_url: str
    mailbox: str
    send_as: str  # a second mailbox: mail From it keeps its From and goes through its own mailbox
    http_url: str
    sandbox_ca_file: str
    swaks: str
    python: str


@dataclass(frozen=True)
class PortChoice:
    port: int  # 0: a free one
    note: str | None = None


def choose_port(requested: int | None, default: int, what: str) -> PortChoice:
    """The requested port as given (0 = any free one); otherwise the default, or a free one if it is taken."""
    if requested is not None:
        return PortChoice(requested)
    if port_is_free(HOST, default):
        return PortChoice(default)
    return PortChoice(0, f"{what} port {default} is in use; using a free port instead")


def concrete_port(choice: PortChoice) -> PortChoice:
    """A real port number for "any free port". The HTTP port is part of the Redirect URL the demo registers
    for admin consent (``http://127.0.0.1:PORT/admin/connectors/SMTP.aspx``), so it must be known before the
    server starts; the moment between this probe and the bind is the only race, and it is on loopback."""
    if choice.port != 0:
        return choice
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return PortChoice(int(probe.getsockname()[1]), choice.note)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def previous_info(home: Path) -> dict[str, Any]:
    """The last run's details: demo.json if it crashed, else what a clean stop put aside. Both are removed,
    so a script waiting for demo.json reads this run's details, never stale ones."""
    data: Any = {}
    for name in (DEMO_FILE, PREVIOUS_FILE):
        path = home / name
        if not data:
            try:
                data = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                data = {}
        path.unlink(missing_ok=True)
    return data if isinstance(data, dict) else {}


def retire_info(home: Path) -> None:
    """On a clean stop demo.json no longer describes anything running: keep it aside for the next run."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(home / DEMO_FILE, home / PREVIOUS_FILE)


def configure_connector(runtime: Runtime, sandbox: SandboxServer) -> ConnectorConfig:
    """Point the connector ``default`` at the sandbox — unless this home's ``default`` is a real one."""
    existing = runtime.connectors.find(DEFAULT_NAME)
    if existing is not None and not _is_local_sandbox(existing):
        raise ConflictError(
            f"the connector {DEFAULT_NAME!r} in {runtime.settings.home} is configured for "
            f"{existing.cloud.name} tenant {existing.tenant_id}; the demo will not overwrite it",
            remedy="Run the demo with its own data directory: m365relay --home .m365relay-demo demo",
        )
    info = sandbox.demo_info
    send_as = add_send_as_mailbox(sandbox)
    change = ConnectorUpdate(
        client_id=info["client_id"],
        tenant_id=info["tenant_id"],
        user_name=info["mailbox"],
        cloud="custom",
        login_url=sandbox.url,
        graph_url=sandbox.url,
        ca_file=str(sandbox.ca_file.resolve()),
        secret=info["secret_value"],
        secret_expires=_secret_expiry(sandbox),
        send_as=[send_as],
    )
    return runtime.connectors.save(DEFAULT_NAME, change, actor="demo")


def grant_mail_read(sandbox: SandboxServer) -> None:
    """Consent what a careful production setup adds to Mail.Send: Mail.Read, so the relay reads bounces from
    the demo mailbox's Inbox (docs/delivery.md), and Mail.ReadBasic.All, so a send whose answer is lost is
    looked up in Sent Items instead of sent twice (docs/credentials.md).

    Through the sandbox's admin API (as a script against it would), not its internals: what the app already
    holds is kept."""
    import httpx

    client_id = str(sandbox.demo_info["client_id"])
    extra = ["Mail.Read", "Mail.ReadBasic.All"]
    with httpx.Client(base_url=sandbox.url, verify=str(sandbox.ca_file), timeout=30, trust_env=False) as client:
        app = client.get(f"/_sandbox/apps/{client_id}").raise_for_status().json()
        change = {
            key: list(dict.fromkeys([*(str(r) for r in app.get(key, [])), *extra]))
            for key in ("granted_roles", "requested_permissions")
        }
        client.patch(f"/_sandbox/apps/{client_id}", json=change).raise_for_status()


def register_redirect_uri(sandbox: SandboxServer, uri: str) -> None:
    """Do what the manual's Register Application step (C) asks of the admin: add the relay's Redirect URL to
    the app's Web redirect URIs, so *Grant admin consent* comes back to the relay instead of stopping at
    AADSTS50011. Through the sandbox's admin API, as a script against it would; earlier runs' URLs (other
    ports) stay registered, as they would in Azure."""
    import httpx

    client_id = str(sandbox.demo_info["client_id"])
    context = ssl.create_default_context(cafile=str(sandbox.ca_file))
    with httpx.Client(base_url=sandbox.url, verify=context, timeout=30, trust_env=False) as admin:
        app = admin.get(f"/_sandbox/apps/{client_id}").raise_for_status().json()
        uris = [str(u) for u in app.get("redirect_uris", [])]
        if uri not in uris:
            admin.patch(f"/_sandbox/apps/{client_id}", json={"redirect_uris": [*uris, uri]}).raise_for_status()


def send_as_address(sandbox: SandboxServer) -> str:
    return f"{SEND_AS_LOCAL_PART}@{str(sandbox.demo_info['mailbox']).rpartition('@')[2]}"


def add_send_as_mailbox(sandbox: SandboxServer) -> str:
    """Give the sandbox tenant a second mailbox, as an administrator adds a shared mailbox in Exchange."""
    import httpx

    address = send_as_address(sandbox)
    with httpx.Client(base_url=sandbox.url, verify=str(sandbox.ca_file), timeout=30) as client:
        client.put(f"/_sandbox/mailboxes/{address}", json={"licensed": True}).raise_for_status()
    return address


def _is_local_sandbox(connector: ConnectorConfig) -> bool:
    host = urlsplit(connector.cloud.login_url).hostname or ""
    return connector.cloud.name == "custom" and host in ("127.0.0.1", "localhost", "::1")


def _secret_expiry(sandbox: SandboxServer) -> date:
    """The demo secret's expiry from the sandbox's seed (capped at the 24 months Azure allows)."""
    from .sandbox.seed import DEMO_SEED_FILE

    today = date.today()
    latest = add_months(today, 24)
    try:
        seed = json.loads((sandbox.data_dir / DEMO_SEED_FILE).read_text("utf-8"))
        expires = date.fromisoformat(str(seed["apps"][0]["secrets"][0]["expires_at"])[:10])
    except (OSError, ValueError, KeyError, IndexError):
        return latest
    return min(max(expires, today), latest)


def ensure_accounts(runtime: Runtime, previous: dict[str, Any]) -> tuple[str, str]:
    """(relay user password, admin password): last run's if they still work, else new ones."""
    users = RelayUserStore(runtime.db, clock=runtime.clock)
    relay_password = str(previous.get("smtp_password") or "")
    if users.find(DEMO_RELAY_USER) is None:
        relay_password = generate_password()
        users.add(DEMO_RELAY_USER, relay_password, actor="demo")
    else:
        users.update(DEMO_RELAY_USER, disabled=False, actor="demo")
        if not relay_password or users.authenticate(DEMO_RELAY_USER, relay_password) is None:
            relay_password = generate_password()
            users.set_password(DEMO_RELAY_USER, relay_password, actor="demo")
    admins = AdminStore(runtime.db, clock=runtime.clock)
    admin_password = str(previous.get("admin_password") or "")
    if admins.find(DEMO_ADMIN) is None:
        admin_password = generate_password()
        admins.create_user(DEMO_ADMIN, admin_password, actor="demo")
    elif not admin_password or admins.verify(DEMO_ADMIN, admin_password, record_login=False) is None:
        admin_password = generate_password()
        admins.set_password(DEMO_ADMIN, admin_password, actor="demo")
    return relay_password, admin_password


def demo_info(endpoints: Endpoints, sandbox: SandboxServer, relay_password: str, admin_password: str) -> DemoInfo:
    assert endpoints.http_url is not None and endpoints.smtp_port is not None
    host, port = endpoints.smtp_host or HOST, endpoints.smtp_port
    return DemoInfo(
        smtp_host=host,
        smtp_port=port,
        smtp_user=DEMO_RELAY_USER,
        smtp_password=relay_password,
        admin_url=f"{endpoints.http_url}/admin/",
        admin_user=DEMO_ADMIN,
        admin_password=admin_password,
        api_url=f"{endpoints.http_url}/api/v1/",
        sandbox_url=sandbox.url,
        mailbox=str(sandbox.demo_info["mailbox"]),
        send_as=send_as_address(sandbox),
        http_url=endpoints.http_url,
        sandbox_ca_file=str(sandbox.ca_file.resolve()),
        swaks=swaks_command(host, port, relay_password),
        python=python_command(host, port, relay_password),
    )


def swaks_command(host: str, port: int, password: str) -> str:
    return (
        f"swaks --server {host}:{port} --auth LOGIN --auth-user {DEMO_RELAY_USER} "
        f"--auth-password {shlex.quote(password)} --from {TEST_SENDER} --to {TEST_RECIPIENT} "
        "--header 'Subject: Hello from m365relay'"
    )


def python_command(host: str, port: int, password: str) -> str:
    """A shell line that sends one message with the standard library (AUTH without TLS: loopback only)."""
    script = (
        f'import smtplib; s = smtplib.SMTP("{host}", {port}); s.login("{DEMO_RELAY_USER}", "{password}"); '
        f's.sendmail("{TEST_SENDER}", ["{TEST_RECIPIENT}"], "From: {TEST_SENDER}\\nTo: {TEST_RECIPIENT}\\n'
        f'Subject: Hello from m365relay\\n\\nIt works."); s.quit()'
    )
    return f"python3 -c {shlex.quote(script)}"


def write_info(home: Path, info: DemoInfo) -> Path:
    """demo.json, mode 0600 (it holds passwords), written whole via a rename."""
    path = home / DEMO_FILE
    tmp = home / f".{DEMO_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(info), handle, indent=2)
    os.replace(tmp, path)
    return path


def send_test_message(info: DemoInfo) -> str:
    """One message through the relay's SMTP port, as the printed one-liner would send it. Blocking."""
    with smtplib.SMTP(info.smtp_host, info.smtp_port, timeout=30) as client:
        client.login(info.smtp_user, info.smtp_password)
        body = f"From: {TEST_SENDER}\r\nTo: {TEST_RECIPIENT}\r\nSubject: m365relay demo test\r\n\r\nIt works.\r\n"
        client.sendmail(TEST_SENDER, [TEST_RECIPIENT], body)
        code, reply = client.noop()
    return f"{code} {reply.decode(errors='replace')}"


async def run_demo(
    settings: Settings,
    sandbox_port: PortChoice,
    stop: asyncio.Event,
    on_ready: Callable[[DemoInfo], None],
    *,
    send_test: Callable[[DemoInfo], None] | None = None,
) -> None:
    """Start everything, call ``on_ready`` once it all listens, and run until ``stop`` is set."""
    previous = previous_info(settings.home)
    sandbox = SandboxServer(settings.home / "sandbox", port=sandbox_port.port, demo=True)
    try:
        await asyncio.to_thread(sandbox.start)
    except OSError as exc:
        raise ValidationError("--sandbox-port", f"cannot start the sandbox: {exc.strerror or exc}") from exc
    runtime: Runtime | None = None
    try:
        await asyncio.to_thread(grant_mail_read, sandbox)
        runtime = await asyncio.to_thread(Runtime, settings)
        await asyncio.to_thread(configure_connector, runtime, sandbox)
        await asyncio.to_thread(register_redirect_uri, sandbox, consent_redirect_uri(settings))
        relay_password, admin_password = await asyncio.to_thread(ensure_accounts, runtime, previous)

        def ready(endpoints: Endpoints) -> None:
            info = demo_info(endpoints, sandbox, relay_password, admin_password)
            write_info(settings.home, info)
            on_ready(info)
            if send_test is not None:
                send_test(info)

        await serve(runtime, stop, on_ready=ready)
    finally:
        retire_info(settings.home)
        if runtime is not None:
            runtime.close()
        await asyncio.to_thread(sandbox.stop)
