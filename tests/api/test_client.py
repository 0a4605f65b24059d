"""m365relay.client against the live API: sending (fields, attachments from paths and bytes, raw), following,
waiting, cancelling, retrying, idempotency, and each problem raised as its typed exception."""

from __future__ import annotations

import asyncio
import socket
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest
from api_support import Api, drain

from m365relay.client import (
    ApiConnectionError,
    AsyncRelayClient,
    Attachment,
    AuthenticationError,
    IdempotencyConflictError,
    MessageNotFoundError,
    MessageStateError,
    PermissionDeniedError,
    RelayClient,
    RequestValidationError,
)
from m365relay.errors import M365RelayError
from support import SandboxAdmin


def test_send_with_attachments_then_wait_while_the_dispatcher_runs(
    api: Api, admin: SandboxAdmin, tmp_path: Path
) -> None:
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n1,2\n")
    with RelayClient(api.url, api.tokens["app"]) as relay:
        accepted = relay.send(
            to="ops@example.com",
            bcc=["audit@example.com"],
            subject="Nightly",
            text="see attached",
            html='<p>see <img src="cid:chart"></p>',
            attachments=[report, ("raw.bin", b"\x00\x01"), Attachment("chart.png", b"PNG!", "image/png", "chart")],
            headers={"X-Job": "nightly"},
        )
        assert accepted.status == "queued" and not accepted.replayed
        worker = threading.Thread(target=drain, args=(api.runtime,))
        worker.start()
        try:
            info = relay.wait(accepted.id, timeout=30, poll=0.05)
        finally:
            worker.join()
        assert info.final and info.status == "sent" and info.attempts == 1
        assert info.recipients == ["ops@example.com", "audit@example.com"]
        assert [e["kind"] for e in info.events][-1] == "sent"
    raw = admin.raw(admin.only_message()["id"])
    parts = {p.get_filename(): p for p in raw.walk() if p.get_filename()}
    assert parts["report.csv"].get_content() in ("a,b\n1,2\n", b"a,b\n1,2\n")
    assert parts["raw.bin"].get_content() == b"\x00\x01"
    assert parts["chart.png"]["Content-ID"] == "<chart>" and raw["X-Job"] == "nightly"


def test_send_raw_cancel_retry_and_idempotency(api: Api, tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = api.connector.user_name
    msg["To"] = "a@example.com"
    msg["Subject"] = "eml"
    msg.set_content("body")
    eml = tmp_path / "m.eml"
    eml.write_bytes(msg.as_bytes())
    with RelayClient(api.url, api.tokens["app"]) as relay:
        first = relay.send_raw(eml, idempotency_key="eml-1")
        again = relay.send_raw(msg.as_bytes(), idempotency_key="eml-1")
        assert again.id == first.id and again.replayed
        with pytest.raises(IdempotencyConflictError) as conflict:
            relay.send_raw(msg.as_bytes() + b"changed", idempotency_key="eml-1")
        assert conflict.value.status == 409 and conflict.value.slug == "idempotency-conflict"
        assert relay.cancel(first.id).status == "cancelled"
        with pytest.raises(MessageStateError):
            relay.cancel(first.id)
        assert relay.retry(first.id).status == "queued"
        enveloped = relay.send_raw(msg.as_bytes(), to=["b@example.com"], save_to_sent_items=False)
        assert relay.get(enveloped.id).recipients == ["b@example.com"]
        assert relay.connectors()[0]["name"] == "default"


def test_problems_become_typed_exceptions(api: Api) -> None:
    with RelayClient(api.url, "m365r_00000000_" + "x" * 43) as stranger, pytest.raises(AuthenticationError):
        stranger.get(1)
    with RelayClient(api.url, api.tokens["reader"]) as reader, pytest.raises(PermissionDeniedError) as denied:
        reader.send(to=["a@example.com"])
    assert "'send'" in denied.value.detail
    with RelayClient(api.url, api.tokens["app"]) as relay:
        with pytest.raises(RequestValidationError) as invalid:
            relay.send(to=["a@example.com"], importance="urgent", headers={"Subject": "x"})
        assert invalid.value.errors[0]["field"] == "importance"
        with pytest.raises(MessageNotFoundError):
            relay.get(987654)
        with pytest.raises(RequestValidationError) as nobody:
            relay.send(subject="nobody")
        assert nobody.value.errors == [{"field": "to", "message": "at least one recipient (to, cc or bcc) is required"}]
        assert isinstance(nobody.value, M365RelayError) and not nobody.value.transient


def test_unreachable_relay_is_a_transient_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    with RelayClient(f"http://127.0.0.1:{port}", "m365r_x", timeout=5) as relay, pytest.raises(ApiConnectionError) as e:
        relay.get(1)
    assert e.value.transient


def test_async_client_has_the_same_methods(api: Api) -> None:
    async def go() -> None:
        async with AsyncRelayClient(api.url, api.tokens["app"]) as relay:
            accepted = await relay.send(to=["a@example.com"], subject="async", text="x", idempotency_key="a-1")
            assert (await relay.send(to=["a@example.com"], subject="async", text="x", idempotency_key="a-1")).replayed
            raw = await relay.send_raw(b"To: b@example.com\r\nSubject: r\r\n\r\nx\r\n")
            assert (await relay.get(raw.id)).subject == "r"
            assert (await relay.cancel(raw.id)).status == "cancelled"
            assert (await relay.retry(raw.id)).status == "queued"
            assert (await relay.wait(accepted.id, timeout=0)).status == "queued"
            assert len(await relay.connectors()) == 1
            with pytest.raises(MessageNotFoundError):
                await relay.get(424242)

    asyncio.run(go())
