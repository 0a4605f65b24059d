"""The SMTP relay front end: an aiosmtpd server in the running event loop (``serve`` runs everything in
one loop) that authenticates applications and commits their mail to the outbox.

    server = SmtpServer(runtime)            # host/port from settings; port=0 picks a free one
    await server.start()                    # listening when it returns; server.port is the bound port
    ...
    await server.reload_tls()               # SIGHUP: new STARTTLS sessions use the re-read certificate
    await server.stop()                     # replies in progress finish, then 421 to the rest

docs/smtp.md describes what clients see: extensions, AUTH rules, the From policy, every reply code.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

from ..access.relay_users import RelayUserStore
from ..errors import ValidationError
from ..runtime import Runtime
from . import smtp_logging
from .smtp_handler import RelayHandler
from .smtp_limits import ConnectionGate, SessionLimits
from .smtp_policy import ClientRules
from .smtp_protocol import RelaySMTP
from .smtp_replies import GREETING_IDENT
from .smtp_tls import server_context

log = logging.getLogger("m365relay.smtp")
SHUTDOWN_GRACE_SECONDS = 30.0  # how long stop() lets a message being committed finish and get its 250
COMMIT_THREADS = 32  # concurrent messages being parsed and committed (they mostly wait for the commit)


class SmtpServer:
    def __init__(
        self,
        runtime: Runtime,
        *,
        host: str | None = None,
        port: int | None = None,
        users: RelayUserStore | None = None,
    ) -> None:
        s = runtime.settings
        self.runtime = runtime
        self.host = host if host is not None else s.smtp_host
        self.port = port if port is not None else s.smtp_port
        self.users = users or RelayUserStore(runtime.db, clock=runtime.clock)
        # Validated now, so a bad allowlist is reported before anything listens.
        self.rules = ClientRules.from_settings(
            s.smtp_allowed_networks, s.smtp_auth_require_tls, s.smtp_auth_allow_loopback_plain
        )
        self.hostname = s.smtp_hostname or ""
        self.handler: RelayHandler | None = None
        self._server: asyncio.Server | None = None
        self._log_filter = smtp_logging.CredentialFilter()
        self._log_level = 0
        self._committers: ThreadPoolExecutor | None = None
        self._tls: ssl.SSLContext | None = None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the SMTP server is already started")
        s = self.runtime.settings
        if not self.hostname:
            self.hostname = await asyncio.to_thread(socket.getfqdn)  # may ask DNS: once, off the loop
        self._tls = await self._load_tls()
        self._committers = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="m365relay-smtp-commit")
        handler = RelayHandler(
            self.runtime, self.users, self.rules, hostname=self.hostname, committers=self._committers
        )
        loop = asyncio.get_running_loop()
        limits = SessionLimits.from_settings(s)
        self.gate = ConnectionGate(limits)

        def protocol() -> RelaySMTP:
            return RelaySMTP(
                handler,
                data_size_limit=None,  # SIZE is announced and enforced by the relay (552 5.3.4)
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=self.hostname,
                ident=GREETING_IDENT,
                tls_context=self._tls,  # read per connection: a reload reaches the next session
                auth_require_tls=True,  # the relay decides per client address (RelayHandler.auth_offered)
                timeout=limits.command_timeout,
                loop=loop,
                limits=limits,
                gate=self.gate,
            )

        self._log_level = smtp_logging.install(self._log_filter, verbose=s.log_level == "debug")
        try:
            self._server = await loop.create_server(protocol, host=self.host, port=self.port)
        except OSError as exc:
            smtp_logging.uninstall(self._log_filter, self._log_level)
            self._committers.shutdown(wait=False)
            raise ValidationError(
                "smtp_port",
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                key="smtp_port",
                remedy=_bind_remedy(exc, self.port),
            ) from exc
        self.handler = handler
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("SMTP relay listening on %s:%s as %s", self.host, self.port, self.hostname)

    async def reload_tls(self) -> bool:
        """Re-read the STARTTLS certificate and key (after a renewal, e.g. by certbot), without closing
        anything: sessions already open keep the context they started with, the next ones get the new one.
        A pair that does not load is reported and the current one stays in use; returns whether it changed."""
        if self._server is None:
            return False
        try:
            context = await self._load_tls()
        except ValidationError as exc:
            log.error("SMTP TLS certificate not reloaded, the current one stays in use: %s", exc.message)
            return False
        self._tls = context
        log.info("SMTP TLS certificate reloaded; new STARTTLS sessions use it")
        return True

    async def _load_tls(self) -> ssl.SSLContext:
        s = self.runtime.settings
        return await asyncio.to_thread(server_context, s.smtp_tls_cert, s.smtp_tls_key, s.home, self.hostname)

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop listening; let messages being committed get their reply; close the other sessions with 421."""
        server, handler = self._server, self.handler
        if server is None or handler is None:
            return
        self._server = None
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handler.no_replies_pending.wait(), grace)
        for connection in list(handler.connections):
            connection.close_for_shutdown()
        await server.wait_closed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handler.no_connections.wait(), 5)
        if self._committers is not None:  # a commit already started finishes (its client just won't hear 250)
            await asyncio.to_thread(self._committers.shutdown, True)
            self._committers = None
        smtp_logging.uninstall(self._log_filter, self._log_level)
        log.info("SMTP relay on %s:%s stopped", self.host, self.port)


def _bind_remedy(exc: OSError, port: int) -> str:
    if exc.errno == errno.EACCES and 0 < port < 1024:
        # Ports below 1024 need CAP_NET_BIND_SERVICE, which an unprivileged user lacks (docs/operations.md).
        return (
            f"Port {port} needs privilege: under systemd add the drop-in contrib/systemd/low-port.conf; in a "
            f"container run with --sysctl net.ipv4.ip_unprivileged_port_start={port}; or listen on 2525."
        )
    return "Choose another address or port (smtp_host, smtp_port), or stop the program using it."
