"""``m365relay serve`` as systemd runs it: a real process with JSON logs, readiness and shutdown announced
on NOTIFY_SOCKET, the SMTP certificate re-read on SIGHUP while a STARTTLS session stays open, SIGTERM
ending it with status 0 — and no log line that is not JSON or that holds the relay password."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from m365relay.access.relay_users import RelayUserStore
from m365relay.ingress.smtp_tls import self_signed_pair
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update, make_settings

PASSWORD = "correct-horse-battery-staple-42"
WAIT = 90.0  # generous: the machine is shared and noisy


class ServeProcess:
    def __init__(self, home: Path, tls_dir: Path, notify_path: str) -> None:
        self.stderr_path = home.parent / "serve.stderr"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("M365RELAY_")},
            "M365RELAY_HOME": str(home),
            "M365RELAY_LOG_FORMAT": "json",
            "M365RELAY_SMTP_TLS_CERT": str(tls_dir / "cert.pem"),
            "M365RELAY_SMTP_TLS_KEY": str(tls_dir / "key.pem"),
            "M365RELAY_SMTP_HOSTNAME": "relay.test",
            "NOTIFY_SOCKET": notify_path,
        }
        self.stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "m365relay", "serve", "--smtp-port", "0", "--http-port", "0"],
            stdout=subprocess.PIPE, stderr=self.stderr, env=env,
        )  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        lines = [line for line in self.stderr_path.read_text().splitlines() if line.strip()]
        return [json.loads(line) for line in lines]

    def wait_for_event(self, matches: Callable[[dict[str, Any]], bool], after: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for event in self.events()[after:]:
                if matches(event):
                    return event
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.stderr_path.read_text()}")
            time.sleep(0.1)
        pytest.fail(f"no such log event within {WAIT} s:\n{self.stderr_path.read_text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()


def write_pair(directory: Path, hostname: str) -> bytes:
    """A new certificate and key, each replaced by a rename (as certbot's deploy hooks do); returns the DER."""
    cert_pem, key_pem = self_signed_pair(hostname)
    for name, data in (("key.pem", key_pem), ("cert.pem", cert_pem)):
        tmp = directory / f".{name}.new"
        tmp.write_bytes(data)
        tmp.replace(directory / name)
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)


def any_cert() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test compares the certificate itself
    return context


def starttls(port: int) -> tuple[smtplib.SMTP, bytes]:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("client.test")
    client.starttls(context=any_cert())
    assert isinstance(client.sock, ssl.SSLSocket)
    der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return client, der


class Notifications:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="m365n")  # short: AF_UNIX paths are limited to 107 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(WAIT)

    def next(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notifications() -> Iterator[Notifications]:
    n = Notifications()
    yield n
    n.close()


def prepare_home(home: Path, sandbox: SandboxServer) -> None:
    runtime = Runtime(make_settings(home))
    try:
        runtime.connectors.save("default", connector_update(sandbox))
        RelayUserStore(runtime.db, clock=runtime.clock).add("app", PASSWORD, actor="test")
    finally:
        runtime.close()


@pytest.mark.slow
def test_sighup_reloads_the_certificate_and_keeps_open_sessions(
    tmp_path: Path, sandbox: SandboxServer, notifications: Notifications
) -> None:
    home, tls = tmp_path / "home", tmp_path / "tls"
    tls.mkdir()
    prepare_home(home, sandbox)
    first = write_pair(tls, "first.relay.test")
    serve = ServeProcess(home, tls, notifications.path)
    try:
        assert "READY=1" in notifications.next()
        ready = serve.wait_for_event(lambda e: e["message"] == "ready")
        port = int(ready["smtp_port"])

        old_session, seen = starttls(port)
        assert seen == first
        second = write_pair(tls, "second.relay.test")
        mark = len(serve.events())
        serve.proc.send_signal(signal.SIGHUP)
        serve.wait_for_event(lambda e: "certificate reloaded" in e["message"], after=mark)
        new_session, seen = starttls(port)
        assert seen == second
        new_session.quit()

        # The session opened before the reload still works: AUTH and a message over its old TLS context.
        old_session.login("app", PASSWORD)
        body = "From: app@example.com\r\nTo: someone@example.com\r\nSubject: across a reload\r\n\r\nHi.\r\n"
        assert old_session.sendmail("app@example.com", ["someone@example.com"], body) == {}
        old_session.quit()
        queued = serve.wait_for_event(lambda e: e["message"].startswith("queued message"))
        assert isinstance(queued["message_id"], int) and f"queued message {queued['message_id']} " in queued["message"]

        # A pair that does not load is reported; the certificate in use stays.
        (tls / "key.pem").write_text("not a key")
        mark = len(serve.events())
        serve.proc.send_signal(signal.SIGHUP)
        failed = serve.wait_for_event(lambda e: "not reloaded" in e["message"], after=mark)
        assert failed["level"] == "error"
        third_session, seen = starttls(port)
        assert seen == second
        third_session.quit()

        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=WAIT) == 0
        assert "STOPPING=1" in notifications.next()
        events = serve.events()  # every line parsed as JSON, or events() would have raised
        assert events[-1]["message"] == "stopped"
        assert all({"time", "level", "logger", "message"} <= set(e) for e in events)
        assert PASSWORD not in serve.stderr_path.read_text()
    finally:
        serve.close()
