"""``m365relay demo`` as a user runs it: a subprocess that prints how to send mail and writes demo.json; a
message sent with smtplib and the printed credentials shows up in the sandbox; SIGTERM stops it cleanly;
running it again in the same home works and keeps the credentials."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

KEYS = {"smtp_host", "smtp_port", "smtp_user", "smtp_password", "admin_url", "admin_user", "admin_password",
        "api_url", "sandbox_url", "mailbox"}  # fmt: skip


class Demo:
    def __init__(self, home: Path, *extra: str) -> None:
        env = {**os.environ, "M365RELAY_HOME": str(home), "COLUMNS": "250"}
        env.pop("M365RELAY_CONFIG", None)
        self.home = home
        self.log = (home.parent / f"demo-{time.monotonic_ns()}.log").open("w+")
        args = ["demo", "--http-port", "0", "--smtp-port", "0", "--sandbox-port", "0", *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "m365relay", *args], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def info(self, timeout: float = 90) -> dict[str, Any]:
        path = self.home / "demo.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                loaded: dict[str, Any] = json.loads(path.read_text())
                return loaded
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"no demo.json after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not self.log.closed:
            self.log.close()


def send(info: dict[str, Any], subject: str) -> None:
    with smtplib.SMTP(info["smtp_host"], info["smtp_port"], timeout=30) as client:
        client.login(info["smtp_user"], info["smtp_password"])
        body = f"From: app@example.com\r\nTo: someone@example.com\r\nSubject: {subject}\r\n\r\nIt works.\r\n"
        assert client.sendmail("app@example.com", ["someone@example.com"], body) == {}


def wait_for_subject(info: dict[str, Any], ca_file: Path, subject: str, timeout: float = 60) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=info["sandbox_url"], verify=context, timeout=10) as sandbox:
        while time.monotonic() < deadline:
            for message in sandbox.get("/_sandbox/messages").raise_for_status().json():
                if message["subject"] == subject:
                    found: dict[str, Any] = message
                    return found
            time.sleep(0.2)
    pytest.fail(f"{subject!r} did not reach the sandbox within {timeout} s")


def test_demo_delivers_through_smtp_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = Demo(home)
    try:
        info = demo.info()
        assert set(info) >= KEYS
        assert oct((home / "demo.json").stat().st_mode & 0o777) == "0o600"
        send(info, "hello from the demo test")
        captured = wait_for_subject(info, home / "sandbox" / "ca.pem", "hello from the demo test")
        assert captured["from"] == info["mailbox"] and captured["to"] == ["someone@example.com"]
        with httpx.Client(timeout=10) as web:
            assert web.get(info["api_url"].replace("/api/v1/", "/healthz")).status_code == 200
        assert demo.stop() == 0
        output = demo.output()
        for shown in (info["smtp_password"], info["admin_password"], info["sandbox_url"], "swaks --server"):
            assert shown in output
        assert "python3 -c" in output and "demo stopped" in output
        assert "Traceback" not in output
    finally:
        demo.kill()

    again = Demo(home, "--send-test")  # the same home: everything is reused, the passwords too
    try:
        second = again.info()
        assert (second["smtp_password"], second["admin_password"]) == (info["smtp_password"], info["admin_password"])
        wait_for_subject(second, home / "sandbox" / "ca.pem", "m365relay demo test")
        send(second, "second run")
        wait_for_subject(second, home / "sandbox" / "ca.pem", "second run")
        assert again.stop() == 0
    finally:
        again.kill()


def test_printed_python_one_liner_works(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = Demo(home)
    try:
        info = demo.info()
        done = subprocess.run(info["python"], shell=True, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        wait_for_subject(info, home / "sandbox" / "ca.pem", "Hello from m365relay")
        assert demo.stop() == 0
    finally:
        demo.kill()
