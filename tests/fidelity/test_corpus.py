"""The shared corpus (268 real-world messages from the test folders of public mail parsers) sent through
the SMTP relay, and a share of it through ``POST /api/v1/messages/raw`` and ``m365relay send --eml``, to the
sandbox: each message is delivered faithfully (``compare.differences`` finds nothing) or refused at
acceptance with a specific permanent reply. The counts are printed (run with ``-s``) and in docs/smtp.md."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from api_support import serve_api
from compare import crlf, differences
from smtp_support import Relay

from m365relay.graph.mime import OutgoingMessage
from support import SandboxAdmin

pytestmark = pytest.mark.slow

# The refusals a careful reviewer would call right: each is permanent (5xx / 422) and names the cause.
SPECIFIC_SMTP = (
    "5.6.0 Line too long",
    "5.6.0 Bare CR or LF",
    "5.6.0 Header field",
    "5.6.0 Malformed header block",
    "5.6.0 The From header field",
    "5.6.0 Header field From:",
)
HTTP_SHARE = 5  # every 5th message also goes through POST /messages/raw
CLI_SHARE = 90  # every 90th through `m365relay send --eml`


def smtp_ready(data: bytes) -> bytes:
    """As a mail client hands a stored message over: CRLF line ends (many repositories store LF only),
    ending in CRLF (RFC 5321 §4.1.1.4: the content ends with a line)."""
    data = crlf(data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _summary(name: str, faithful: int, refused: dict[str, str]) -> str:
    lines = [f"{name}: {faithful} faithful, {len(refused)} refused"]
    lines += [f"  {path}: {reason}" for path, reason in sorted(refused.items())]
    return "\n".join(lines)


def _recipients(summary: dict[str, Any]) -> list[str]:
    return [*summary["to"], *summary["cc"], *summary["bcc"]]


def _check_delivered(relay: Relay, admin: SandboxAdmin, sent: dict[str, tuple[str, bytes]], failures: list[str]) -> int:
    by_rcpt = {a.lower(): m for m in admin.messages(limit=5000) for a in _recipients(m)}
    faithful = 0
    records = {tuple(r.recipients): r for r in relay.queued()}
    for rcpt, (name, data) in sent.items():
        captured = by_rcpt.get(rcpt)
        if captured is None:
            record = records.get((rcpt,))
            state = f"{record.status}: {record.last_error}" if record else "not in the outbox"
            failures.append(f"{name}: accepted, then not delivered ({state})")
            continue
        raw = admin.client.get(f"/_sandbox/messages/{captured['id']}/raw").content
        found = differences(data, raw, envelope=[rcpt], delivered=_recipients(captured))
        if found:
            failures.append(f"{name}: " + "; ".join(found))
        else:
            faithful += 1
    return faithful


def test_the_corpus_through_smtp_and_http_is_faithful_or_refused_at_acceptance(
    start_relay: Any, admin: SandboxAdmin, corpus: list[Path]
) -> None:
    relay = start_relay()
    api_gen = serve_api(relay.runtime, relay.connector)
    api = next(api_gen)
    failures: list[str] = []
    smtp_sent: dict[str, tuple[str, bytes]] = {}
    http_sent: dict[str, tuple[str, bytes]] = {}
    smtp_refused: dict[str, str] = {}
    http_refused: dict[str, str] = {}
    client = relay.smtp()
    http = api.client("app")
    try:
        for index, path in enumerate(corpus):
            name = str(path.relative_to(path.parents[1]))
            data = smtp_ready(path.read_bytes())
            rcpt = f"corpus{index}@example.com"
            try:
                client.sendmail("app@example.com", [rcpt], data)
                smtp_sent[rcpt] = (name, data)
            except smtplib.SMTPDataError as exc:
                text = exc.smtp_error.decode("utf-8", "replace")
                smtp_refused[name] = f"{exc.smtp_code} {text}"
                if exc.smtp_code < 500 or not text.startswith(SPECIFIC_SMTP):
                    failures.append(f"{name}: refused over SMTP, but not specifically: {exc.smtp_code} {text}")
            if index % HTTP_SHARE == 0:
                rcpt = f"http{index}@example.com"
                answer = http.post(
                    "/messages/raw", params={"to": rcpt}, content=data,
                    headers={"Content-Type": "message/rfc822"},
                )  # fmt: skip
                if answer.status_code == 202:
                    http_sent[rcpt] = (name, data)
                elif answer.status_code == 422:
                    http_refused[name] = answer.json()["detail"]
                else:
                    failures.append(f"{name}: POST /messages/raw answered {answer.status_code} {answer.text[:200]}")
        relay.deliver()
        smtp_faithful = _check_delivered(relay, admin, smtp_sent, failures)
        http_faithful = _check_delivered(relay, admin, http_sent, failures)
    finally:
        client.close()
        http.close()
        next(api_gen, None)
    print("\n" + _summary("SMTP", smtp_faithful, smtp_refused))
    print(_summary("HTTP raw", http_faithful, http_refused))
    assert not failures, "\n".join(failures)


def test_a_share_of_the_corpus_through_send_eml(start_relay: Any, admin: SandboxAdmin, corpus: list[Path]) -> None:
    """``m365relay send --eml`` has no envelope: the To/Cc/Bcc addresses the one parser reads decide."""
    relay = start_relay()
    env = {**os.environ, "M365RELAY_HOME": str(relay.runtime.settings.home), "COLUMNS": "200"}
    faithful, refused, failures = 0, {}, []
    for path in corpus[::CLI_SHARE]:
        name = str(path.relative_to(path.parents[1]))
        data = smtp_ready(path.read_bytes())
        eml = relay.runtime.settings.home / "message.eml"
        eml.write_bytes(data)
        before = {m["id"] for m in admin.messages(limit=5000)}
        done = subprocess.run(
            [sys.executable, "-m", "m365relay", "send", "--eml", str(eml)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            refused[name] = (done.stdout + done.stderr).strip().splitlines()[-1]
            continue
        relay.deliver()
        new = [m for m in admin.messages(limit=5000) if m["id"] not in before]
        if len(new) != 1:
            failures.append(f"{name}: queued by send --eml, then {len(new)} messages delivered")
            continue
        envelope = OutgoingMessage.from_bytes(data).header_recipients()
        raw = admin.client.get(f"/_sandbox/messages/{new[0]['id']}/raw").content
        problems = differences(data, raw, envelope=envelope, delivered=_recipients(new[0]))
        if problems:
            failures.append(f"{name}: " + "; ".join(problems))
        else:
            faithful += 1
    print("\n" + _summary("send --eml", faithful, refused))
    assert not failures, "\n".join(failures)
