"""The SMTP relay under test: a real ``SmtpServer`` on a real socket, in a thread with its own event loop (the
stdlib ``smtplib`` client blocks), over a runtime whose connector points at the sandbox."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from m365relay.access.passwords import Passwords
from m365relay.access.relay_users import RelayUserStore
from m365relay.connectors import ConnectorConfig
from m365relay.ingress.smtp import SmtpServer
from m365relay.ingress.smtp_replies import Reply
from m365relay.outbox import MessageRecord
from m365relay.runtime import Runtime

USER = "app"
PASSWORD = "correct horse battery staple"
MAILBOX_DOMAIN = "contoso.onmicrosoft.com"
# argon2 with the smallest cost: the relay's logic is under test here, not argon2's price.
FAST_PASSWORDS = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


class ServerThread:
    """``SmtpServer.start()``/``stop()`` in a background event loop."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="smtp-relay", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self._close_loop()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop(grace=10))
        self._close_loop()

    def _close_loop(self) -> None:
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            self._thread.join(10)
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)


@dataclass
class Relay:
    runtime: Runtime
    users: RelayUserStore
    connector: ConnectorConfig
    thread: ServerThread
    host: str
    opened: list[smtplib.SMTP] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.thread.server.port

    @property
    def cert_file(self) -> Path:
        return self.runtime.settings.home / "smtp-tls" / "cert.pem"

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))

    def smtp(self, *, tls: bool = True, login: tuple[str, str] | None = (USER, PASSWORD)) -> smtplib.SMTP:
        """A connected client: EHLO, then STARTTLS (verifying the relay's certificate) and AUTH if asked."""
        client = smtplib.SMTP(self.host, self.port, timeout=30)
        self.opened.append(client)
        client.ehlo("client.example")
        if tls:
            client.starttls(context=self.tls_context())
            client.ehlo("client.example")
        if login is not None:
            client.login(*login)
        return client

    def raw(self) -> RawClient:
        return RawClient(socket.create_connection((self.host, self.port), timeout=30))

    def deliver(self) -> None:
        """Run the dispatcher until the outbox has nothing left to do."""

        async def go() -> None:
            try:
                async with asyncio.timeout(60):
                    await self.runtime.dispatcher().run_until_idle()
            finally:
                await self.runtime.sender.aclose()

        asyncio.run(go())

    def queued(self) -> list[MessageRecord]:
        return self.runtime.outbox.list(limit=1000)

    def close_clients(self) -> None:
        for client in self.opened:
            with contextlib.suppress(Exception):
                client.close()


class RawClient:
    """Bytes in, reply lines out: for pipelining and for what smtplib refuses to send."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its text lines joined by newlines."""
        lines: list[str] = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("the relay closed the connection")
            text = line.decode("utf-8").rstrip("\r\n")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), "\n".join(lines)

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


StartRelay = Callable[..., Relay]


def plain_auth(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def assert_reply(code: int, text: str | bytes, expected: Reply) -> None:
    shown = text.decode() if isinstance(text, bytes) else text
    assert code == expected.code, f"expected {expected.code} {expected.status}, got {code} {shown}"
    assert shown.startswith(expected.status), f"expected {expected.status}, got {code} {shown}"


def message(
    *,
    sender: str = "app@example.com",
    to: str = "someone@example.com",
    subject: str = "hello",
    body: str = "Hello from the relay test.",
    extra: str = "",
) -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
    return (head + "\r\n" + body + "\r\n").encode()


@contextlib.contextmanager
def running(relay: Relay) -> Iterator[Relay]:
    try:
        yield relay
    finally:
        relay.close_clients()
        relay.thread.stop()
