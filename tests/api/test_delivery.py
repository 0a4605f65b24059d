"""A message posted to the API is delivered by the dispatcher to the sandbox mailbox, intact: bodies,
attachments byte for byte, inline images with their Content-ID, cc/bcc, custom headers, importance."""

from __future__ import annotations

import base64
import os

from api_support import Api, drain

from support import SandboxAdmin


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_json_message_arrives_with_attachments_and_inline_images(api: Api, admin: SandboxAdmin) -> None:
    pdf = os.urandom(50_000)
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(2_000)
    response = api.client().post(
        "/messages",
        json={
            "to": ["Zoë <zoe@example.com>"],
            "cc": ["cc@example.com"],
            "bcc": ["hidden@example.com"],
            "reply_to": ["support@example.com"],
            "subject": "Rapport — 日本語",
            "text": "Grüße",
            "html": '<p>Grüße <img src="cid:logo@relay"></p>',
            "attachments": [
                {"filename": "Bericht ü.pdf", "content_type": "application/pdf", "content": b64(pdf)},
                {"filename": "logo.png", "content_type": "image/png", "content": b64(png), "content_id": "logo@relay"},
            ],
            "headers": {"X-Case-Id": "42"},
            "importance": "high",
        },
    )
    assert response.status_code == 202, response.text
    drain(api.runtime)
    assert api.client().get(response.headers["location"]).json()["status"] == "sent"
    captured = admin.only_message()
    assert captured["subject"] == "Rapport — 日本語"
    assert captured["to"] == ["zoe@example.com"] and captured["cc"] == ["cc@example.com"]
    assert captured["bcc"] == ["hidden@example.com"]
    raw = admin.raw(captured["id"])
    assert "Bcc" not in raw
    assert raw["X-Case-Id"] == "42" and str(raw["Reply-To"]) == "support@example.com"
    assert raw.get_body(("plain",)).get_content().strip() == "Grüße"  # type: ignore[union-attr]
    assert 'src="cid:logo@relay"' in raw.get_body(("html",)).get_content()  # type: ignore[union-attr]
    parts = {p.get_filename(): p for p in raw.walk() if p.get_filename()}
    assert parts["Bericht ü.pdf"].get_content() == pdf
    assert parts["logo.png"].get_content() == png
    assert parts["logo.png"]["Content-ID"] == "<logo@relay>"
    assert parts["logo.png"].get_content_disposition() == "inline"


def test_json_path_without_sent_items_copy_keeps_attachments(api: Api, admin: SandboxAdmin) -> None:
    data = os.urandom(3_000)
    response = api.client().post(
        "/messages",
        json={
            "to": ["a@example.com"],
            "subject": "no copy",
            "html": "<b>hi</b>",
            "attachments": [{"filename": "data.bin", "content": b64(data)}],
            "save_to_sent_items": False,
        },
    )
    assert response.status_code == 202
    drain(api.runtime)
    captured = admin.only_message()
    assert captured["save_to_sent_items"] is False
    parts = [p for p in admin.raw(captured["id"]).walk() if p.get_filename()]
    assert [(p.get_filename(), p.get_content()) for p in parts] == [("data.bin", data)]
