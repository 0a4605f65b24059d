"""The demo's printout says how to try a bounce, and doing what it says works: a message to nobody@{tenant
domain} through the demo's SMTP port turns bounced (5.1.10) and the next RCPT to it gets 550 5.1.1."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from test_demo import Demo


def queue(home: Path, *args: str) -> str:
    env = {**os.environ, "M365RELAY_HOME": str(home), "COLUMNS": "250"}
    done = subprocess.run(
        [sys.executable, "-m", "m365relay", "queue", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_demo_bounce_works_as_printed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = Demo(home)
    try:
        info = demo.info()
        domain = info["mailbox"].rpartition("@")[2]
        nobody = f"nobody@{domain}"
        deadline = time.monotonic() + 60  # demo.json is written before the printout is complete
        while not all(text in demo.output() for text in (nobody, "x@bad.invalid", "queue show")):
            assert time.monotonic() < deadline, demo.output()
            time.sleep(0.2)
        with smtplib.SMTP(info["smtp_host"], info["smtp_port"], timeout=30) as client:
            client.login(info["smtp_user"], info["smtp_password"])
            body = f"From: app@example.com\r\nTo: {nobody}\r\nSubject: bounce me\r\n\r\nHi\r\n"
            assert client.sendmail("app@example.com", [nobody], body) == {}
        deadline = time.monotonic() + 120  # the NDR arrives ~2 s after the send; the Inbox is read every 15 s
        while "bounce me" not in queue(home, "ls", "--status", "bounced"):
            assert time.monotonic() < deadline, demo.output()
            time.sleep(1)
        with smtplib.SMTP(info["smtp_host"], info["smtp_port"], timeout=30) as client:
            client.login(info["smtp_user"], info["smtp_password"])
            client.mail("app@example.com")
            code, text = client.rcpt(nobody)
        assert code == 550 and b"5.1.1" in text and b"5.1.10" in text
        assert demo.stop() == 0
    finally:
        demo.kill()
