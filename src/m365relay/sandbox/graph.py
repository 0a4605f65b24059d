"""Graph mail endpoints: sendMail (JSON and base64 MIME), `/me`, and Graph's answer to unknown paths."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import graph_errors as ge
from .graph_errors import GraphError
from .inbox import after_send
from .mailstore import CapturedMessage
from .messages import Prepared, check_recipient_count, ci_get, new_message_id, prepare
from .pipeline import ROLE_SEND, Call, authenticate, graph_call, ids, read_body, stamp
from .rfc5322 import (
    AttachmentData,
    Envelope,
    decode_base64,
    prepend_headers,
    read_envelope,
    valid_address,
    without_headers,
)
from .state import Sandbox


def deliver(call: Call, *, prepared: Prepared, save_to_sent_items: bool, source: str) -> CapturedMessage:
    """Check the mailbox's size limit and recipient budget, then capture the message."""
    sandbox, mailbox = call.sandbox, call.mailbox
    if len(prepared.raw) > mailbox.max_message_size:
        raise ge.message_too_large()
    limits = sandbox.directory.limits
    throttle = sandbox.limits.check_recipients(mailbox.address, prepared.recipient_count, limits)
    if throttle is not None:
        sandbox.stats.throttled[throttle.reason] += 1
        raise ge.throttled(throttle.code, throttle.message, ge.ceil_seconds(throttle.retry_after))
    sandbox.limits.commit_recipients(mailbox.address, prepared.recipient_count)
    captured = CapturedMessage(
        id=uuid.uuid4().hex,
        mailbox=mailbox.address,
        client_id=call.client_id,
        from_address=prepared.from_address,
        to=tuple(prepared.to),
        cc=tuple(prepared.cc),
        bcc=tuple(prepared.bcc),
        subject=prepared.subject,
        message_id=prepared.message_id,
        received_at=sandbox.clock.now(),
        save_to_sent_items=save_to_sent_items,
        request_id=call.request_id,
        source=source,
        raw=prepared.raw,
        attachments=tuple(a.summary() for a in prepared.attachments) if source != "mime" else None,
    )
    sandbox.mail.add(captured)
    after_send(sandbox, captured)  # NDRs and auto-replies, filed into the sender's Inbox later
    if save_to_sent_items:  # filed asynchronously: visible after the Sent Items delay (sentitems.py)
        sandbox.sent_items.file(captured, sandbox.clock.now())
    return captured


def _prepare_mime(call: Call, body: bytes) -> Prepared:
    """A base64 RFC 5322 message: recipients come from its headers (Graph has no envelope)."""
    try:
        raw = decode_base64(body)
    except ValueError as exc:
        raise GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.") from exc
    return prepare_mime(call, raw)


def prepare_mime(call: Call, raw: bytes, attachments: tuple[AttachmentData, ...] = ()) -> Prepared:
    """Validate and render an RFC 5322 message as Exchange submits it (MIME sendMail, or a MIME draft)."""
    envelope: Envelope = read_envelope(raw)
    mailbox = call.mailbox
    for address in envelope.recipients:
        if not valid_address(address):
            raise ge.invalid_recipients(
                f"Recipient '{address}' is not resolved. All recipients must be resolved before a message "
                "can be submitted."
            )
    check_recipient_count(len(envelope.recipients))
    added: list[tuple[str, str]] = []
    if envelope.from_addresses:
        from_address = envelope.from_addresses[0]
        if not mailbox.may_send_as(from_address):
            raise ge.send_as_denied()
    else:
        from_address = mailbox.address
        added.append(("From", mailbox.address))
    message_id = envelope.message_id
    if not message_id:
        message_id = new_message_id(mailbox)
        added.append(("Message-ID", message_id))
    if not envelope.has_date:
        added.append(("Date", format_datetime(datetime.fromtimestamp(call.sandbox.clock.now(), tz=UTC))))
    delivered = without_headers(raw, {"bcc"}) if envelope.bcc else raw
    if added:
        delivered = prepend_headers(delivered, added)
    return Prepared(
        delivered, from_address, envelope.to, envelope.cc, envelope.bcc, envelope.subject, message_id, list(attachments)
    )


async def _send_mail(call: Call) -> Response:
    request = call.request
    body = await read_body(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/plain":
        prepared = _prepare_mime(call, body)
        # MIME sends cannot turn Sent Items off [obs].
        deliver(call, prepared=prepared, save_to_sent_items=True, source="mime")
        return Response(status_code=202)
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ge.bad_json() from exc
    if not isinstance(payload, dict):
        raise ge.bad_json()
    message = ci_get(payload, "message")
    if not message:
        raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty.")
    prepared = prepare(message, call.mailbox, call.sandbox.clock.now())
    save = ci_get(payload, "saveToSentItems")
    save_to_sent = not (save is False or (isinstance(save, str) and save.lower() == "false"))
    deliver(call, prepared=prepared, save_to_sent_items=save_to_sent, source="json")
    return Response(status_code=202)


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    async def send_mail(request: Request) -> Response:
        return await graph_call(sandbox, request, "sendMail", ROLE_SEND, _send_mail)

    async def me(request: Request) -> Response:
        # App-only tokens have no signed-in user [obs].
        request_id, client_request_id = ids(request)
        sandbox.stats.count("graph_other")
        try:
            authenticate(sandbox, request)
            raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        except GraphError as error:
            response = error.response(sandbox.clock.now(), request_id, client_request_id)
        return stamp(response, request_id, client_request_id)

    async def unknown(request: Request) -> Response:
        request_id, client_request_id = ids(request)
        sandbox.stats.count("graph_other")
        segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        error = GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
        return stamp(error.response(sandbox.clock.now(), request_id, client_request_id), request_id, client_request_id)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return [
        Route("/v1.0/users/{user}/sendMail", send_mail, methods=["POST"]),
        Route("/v1.0/me", me, methods=methods),
        Route("/v1.0/me/{rest:path}", me, methods=methods),
        Route("/v1.0/{rest:path}", unknown, methods=methods),
    ]
