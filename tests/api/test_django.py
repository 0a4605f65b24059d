"""Django's mail API through m365relay.contrib.django.EmailBackend, in both modes: in-process (committed to
the relay's database) and HTTP (posted to the running API). The messages arrive in the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import Api, drain

from m365relay.client import AuthenticationError
from support import SandboxAdmin

django = pytest.importorskip("django")


@pytest.fixture(scope="module")
def django_settings() -> Any:
    from django.conf import settings

    if not settings.configured:
        import django_project.settings as project

        settings.configure(**{name: getattr(project, name) for name in dir(project) if name.isupper()})
        django.setup()
    return settings


@pytest.fixture(params=["in-process", "http"])
def mode(request: pytest.FixtureRequest, api: Api, admin: SandboxAdmin, django_settings: Any) -> Iterator[str]:
    from django.test import override_settings

    values: dict[str, Any] = {"DEFAULT_FROM_EMAIL": f"Relay tests <{admin.demo['mailbox']}>"}
    if request.param == "http":
        values |= {"M365RELAY_API_URL": api.url, "M365RELAY_API_KEY": api.tokens["app"]}
    else:
        values |= {"M365RELAY": {"home": str(api.runtime.settings.home)}}
    with override_settings(**values):
        yield request.param


def test_send_mail(mode: str, api: Api, admin: SandboxAdmin) -> None:
    from django.core.mail import get_connection, send_mail

    assert get_connection().mode == mode
    assert send_mail("Password reset", "Follow the link.", None, ["user@example.com"]) == 1
    drain(api.runtime)
    captured = admin.only_message()
    assert captured["subject"] == "Password reset" and captured["to"] == ["user@example.com"]
    record = api.runtime.outbox.list(limit=1)[0]
    assert record.status == "sent"
    if mode == "http":  # the key's name and its never-reused prefix
        assert record.source == "api" and (record.source_detail or "").startswith("app (")
    else:
        assert (record.source, record.source_detail) == ("library", "django")


def test_email_multi_alternatives_with_attachment_html_cc_bcc_reply_to_and_headers(
    mode: str, api: Api, admin: SandboxAdmin
) -> None:
    from django.core.mail import EmailMultiAlternatives

    pdf = bytes(range(256)) * 20
    message = EmailMultiAlternatives(
        subject="Invoice 7 — Grüße",
        body="Your invoice is attached.",
        to=["Client <client@example.com>"],
        cc=["accounts@example.com"],
        bcc=["archive@example.com"],
        reply_to=["billing@example.com"],
        headers={"X-Invoice": "7"},
    )
    message.attach_alternative("<p>Your <b>invoice</b> is attached.</p>", "text/html")
    message.attach("invoice-7.pdf", pdf, "application/pdf")
    assert message.send() == 1
    drain(api.runtime)
    captured = admin.only_message()
    assert captured["to"] == ["client@example.com"] and captured["cc"] == ["accounts@example.com"]
    assert captured["bcc"] == ["archive@example.com"]
    raw = admin.raw(captured["id"])
    assert "Bcc" not in raw and "archive@example.com" not in str(raw)
    assert raw["Subject"] == "Invoice 7 — Grüße" and raw["X-Invoice"] == "7"
    assert str(raw["Reply-To"]) == "billing@example.com"
    assert "<b>invoice</b>" in raw.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "attached" in raw.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    (attachment,) = [p for p in raw.walk() if p.get_filename()]
    assert attachment.get_filename() == "invoice-7.pdf" and attachment.get_content() == pdf


def test_messages_without_recipients_are_skipped(mode: str, api: Api) -> None:
    from django.core.mail import EmailMessage, get_connection

    with get_connection() as connection:
        sent = connection.send_messages([EmailMessage("nobody", "x", to=[]), EmailMessage("one", "x", to=["a@b.co"])])
    assert sent == 1 and api.runtime.outbox.pending_count() == 1


def test_fail_silently(api: Api, admin: SandboxAdmin, django_settings: Any) -> None:
    from django.core.mail import send_mail
    from django.test import override_settings

    with override_settings(
        DEFAULT_FROM_EMAIL=admin.demo["mailbox"],
        M365RELAY_API_URL=api.url,
        M365RELAY_API_KEY="m365r_00000000_" + "x" * 43,
    ):
        assert send_mail("s", "b", None, ["a@example.com"], fail_silently=True) == 0
        with pytest.raises(AuthenticationError):
            send_mail("s", "b", None, ["a@example.com"])
    assert api.runtime.outbox.pending_count() == 0


def test_importing_m365relay_does_not_import_django() -> None:
    import subprocess
    import sys

    code = "import sys, m365relay, m365relay.contrib.django, m365relay.client; print('django' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
