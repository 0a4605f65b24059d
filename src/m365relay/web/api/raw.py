"""``POST /messages/raw``: a ready RFC 5322 message (``message/rfc822``), streamed to a spool file as it
arrives — never held whole in memory when large — then committed like any other message. Envelope
recipients (``to``) decide delivery as SMTP's RCPT TO would; without them the To/Cc/Bcc headers do."""

from __future__ import annotations

import hashlib
import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from ...access.api_keys import ApiKey
from ...addresses import deliverable
from ...errors import ValidationError
from ...graph.acceptance import accept_ready, ready_rules
from ...graph.mime import OutgoingMessage
from ..problems import ProblemError
from .context import Context, require
from .ingest import Submission, accept, canonical_hash
from .messages import IdempotencyKey
from .models import ADDRESS_PATTERN, MessageAccepted, problem_responses

router = APIRouter(tags=["messages"])

MEDIA_TYPE = "message/rfc822"
SPOOL_IN_MEMORY = 4 * 1024 * 1024  # larger bodies go to a temporary file

RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The message as RFC 5322 bytes (CRLF or LF line ends), e.g. an .eml file.",
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/messages/raw",
    status_code=202,
    response_model=MessageAccepted,
    summary="Send a ready RFC 5322 message",
    openapi_extra=RAW_BODY,
    responses=problem_responses(404, 409, 413, 415, 422, 503),
)
async def post_raw(
    request: Request,
    response: Response,
    context: Context,
    key: Annotated[ApiKey, Depends(require("send"))],
    connector: Annotated[str | None, Query(max_length=64, description="Connector name; default: `default`.")] = None,
    to: Annotated[
        list[str] | None,
        Query(
            max_length=500,
            description="Envelope recipients (repeat `to=`); default: the To/Cc/Bcc headers.",
            json_schema_extra={"items": {"type": "string", "pattern": ADDRESS_PATTERN}},  # what the server takes
        ),
    ] = None,
    save_to_sent_items: Annotated[bool, Query(description="Keep a copy in Sent Items.")] = True,
    idempotency_key: IdempotencyKey = None,
) -> MessageAccepted:
    """Queue a complete message as it is (headers, MIME structure and all). Bcc headers are honoured and never
    shown to recipients; with `to`, exactly those addresses receive it."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != MEDIA_TYPE:
        raise ProblemError(
            "unsupported-media-type",
            f"send the message with Content-Type: {MEDIA_TYPE} (got {media_type or 'none'}); "
            "JSON messages go to POST /messages",
        )
    envelope = _envelope(to)
    policy = context.runtime.settings.smtp_from_policy  # one From policy for SMTP and ready messages
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed below
    try:
        digest = hashlib.sha256()
        async for chunk in request.stream():  # the body limit is enforced on this stream
            spool.write(chunk)
            digest.update(chunk)
        if spool.tell() == 0:
            raise ValidationError("body", "the message is empty", key="body")
        document = {"raw": digest.hexdigest(), "to": envelope, "save_to_sent_items": save_to_sent_items}
        submission = Submission(
            connector=connector,
            build=lambda config: accept_ready(
                _parse(spool), ready_rules(config.user_name, policy, f"API key {key.name!r}", config.send_as)
            ),
            envelope=envelope,
            save_to_sent_items=save_to_sent_items,
            idempotency_key=idempotency_key,
            content_hash=canonical_hash(document),
        )
        return await accept(request, response, context, key, submission)
    finally:
        spool.close()


def _parse(spool: Any) -> OutgoingMessage:
    spool.seek(0)
    return OutgoingMessage.from_stream(spool)


def _envelope(addresses: list[str] | None) -> list[str] | None:
    if not addresses:
        return None
    # One rule for every path (addresses.py): the SMTP relay refuses the same addresses at RCPT.
    errors = [
        ValidationError(f"to[{i}]", f"{a!r} is not a deliverable address: {problem}", key=f"to[{i}]")
        for i, a in enumerate(addresses)
        if (problem := deliverable(a.strip())) is not None
    ]
    if errors:
        raise ValidationError.combine(errors)
    return [a.strip() for a in addresses]
