"""The demo's sandbox tenant has a second mailbox listed as send-as, and the printout says how to try it:
mail From it goes through that mailbox, with its From kept."""

from __future__ import annotations

import smtplib
from pathlib import Path

from test_demo import Demo, wait_for_subject


def test_the_demo_sends_from_its_second_mailbox(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = Demo(home)
    try:
        info = demo.info()
        second = info["send_as"]
        assert second != info["mailbox"] and second.startswith("billing@")
        with smtplib.SMTP(info["smtp_host"], info["smtp_port"], timeout=30) as client:
            client.login(info["smtp_user"], info["smtp_password"])
            body = f"From: {second}\r\nTo: someone@example.com\r\nSubject: from the second mailbox\r\n\r\nHi.\r\n"
            assert client.sendmail(second, ["someone@example.com"], body) == {}
        captured = wait_for_subject(info, home / "sandbox" / "ca.pem", "from the second mailbox")
        assert captured["mailbox"].lower() == second and captured["from"].lower() == second
        assert demo.stop() == 0
        output = demo.output()
        assert f"To try the second mailbox, send From {second}" in output and f"--from {second}" in output
    finally:
        demo.kill()
