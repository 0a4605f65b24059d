"""Large messages: draft, attachments (small ones inline, large ones through upload sessions), send.
Source: learn.microsoft.com/graph/outlook-large-attachments (PROTOCOL.md §5).

1. ``POST /users/{id}/messages`` with the message's base64 MIME minus its largest attachments
   (``Content-Type: text/plain``) → 201 with the draft's ``id``;
2. per attachment: under 3 MB ``POST …/attachments``; otherwise ``POST …/attachments/createUploadSession``
   and ``PUT`` the bytes to ``uploadUrl`` in order, in chunks under 4 MB, **without** Authorization;
3. ``POST /users/{id}/messages/{draft}/send`` → 202.

If anything fails the draft is deleted (best effort) and the error propagates; a retry starts over.
Attachment bytes are decoded from the stream chunk by chunk, so memory stays flat in message size.
"""

from __future__ import annotations

import base64
import contextlib
import json
from urllib.parse import quote

import httpx

from ..errors import DeliveryError, MalformedMessageError, MessageTooLargeError
from .calls import Call, Requester
from .convert import Attachment, attachment_json, convert
from .mime import OutgoingMessage
from .mimewalk import decoded_chunks, decoded_size

INLINE_ATTACHMENT_LIMIT = 3 * 1024 * 1024  # Graph: attach files under 3 MB in one request
# Chunks must be under 4 MB; a multiple of 320 KiB keeps to the rule Graph's upload sessions share.
UPLOAD_CHUNK = 12 * 320 * 1024  # 3.75 MiB
JSON = {"Content-Type": "application/json"}
MAX_DRAFT_REQUEST = 4 * 1024 * 1024 - 64 * 1024  # Graph's 4 MB per request, less room for the request's own headers


async def send_via_upload(sender: Requester, call: Call, outgoing: OutgoingMessage, notes: list[str]) -> httpx.Response:
    """Create the draft from the message's own MIME without its largest attachments (so Message-ID, Date,
    threading, From, Reply-To and every other header field survive; a JSON draft would lose them), then add
    those attachments through upload sessions and send (PROTOCOL.md §5; learn.microsoft.com/graph/api/
    user-post-messages: "Create a draft of a new message in either JSON or MIME format")."""
    large = _large_attachments(outgoing)
    notes.append(
        f"sent as a draft from its MIME with {len(large)} large attachment(s) uploaded in sessions "
        "(large message); it is saved in Sent Items"
    )
    mime = base64.b64encode(_without(outgoing, large))
    draft = await sender.request(call, "POST", "messages", content=mime, headers={"Content-Type": "text/plain"})
    draft_id = _json(draft).get("id")
    if not isinstance(draft_id, str) or not draft_id:
        raise MalformedMessageError("Graph created the draft but returned no id")
    base = f"messages/{quote(draft_id, safe='')}"
    if call.on_draft is not None:  # recorded before `send`, so an in-doubt send can be resolved by the draft
        imid = _json(draft).get("internetMessageId")
        await call.on_draft(draft_id, imid if isinstance(imid, str) else None)
    try:
        for attachment in large:
            await _attach(sender, call, outgoing, base, attachment)
        return await sender.request(call, "POST", f"{base}/send", content=b"", headers=JSON)
    except DeliveryError:
        await _discard(sender, call, base)
        raise


def _large_attachments(outgoing: OutgoingMessage) -> list[Attachment]:
    """The fewest attachments, largest first, whose removal lets the rest go in one request as base64."""
    converted = convert(outgoing, "")
    candidates = sorted(
        (a for a in converted.attachments if a.part.cut_end > a.part.cut_start),
        key=lambda a: a.part.cut_end - a.part.cut_start,
        reverse=True,
    )
    chosen: list[Attachment] = []
    remaining = outgoing.size
    for attachment in candidates:
        if 4 * ((remaining + 2) // 3) <= MAX_DRAFT_REQUEST:
            break
        chosen.append(attachment)
        remaining -= attachment.part.cut_end - attachment.part.cut_start
    if 4 * ((remaining + 2) // 3) > MAX_DRAFT_REQUEST:
        raise MessageTooLargeError(
            "the message is too large for one Graph request even without its attachments (its text and "
            "inline parts exceed about 3 MB)"
        )
    return chosen


def _without(outgoing: OutgoingMessage, removed: list[Attachment]) -> bytes:
    """The message's bytes with the removed parts cut out (their delimiter lines included)."""
    cuts = sorted((a.part.cut_start, a.part.cut_end) for a in removed)
    stream, out, pos = outgoing.body, [outgoing.header_bytes()], outgoing.body_offset
    for start, end in cuts:
        stream.seek(pos)
        out.append(stream.read(start - pos))
        pos = end
    stream.seek(pos)
    out.append(stream.read())
    return b"".join(out)


async def _attach(sender: Requester, call: Call, outgoing: OutgoingMessage, base: str, attachment: Attachment) -> None:
    size = decoded_size(outgoing.body, attachment.part)
    if size < INLINE_ATTACHMENT_LIMIT:
        payload = json.dumps(attachment_json(outgoing.body, attachment)).encode()
        await sender.request(call, "POST", f"{base}/attachments", content=payload, headers=JSON)
        return
    item: dict[str, object] = {
        "attachmentType": "file",
        "name": attachment.name,
        "size": size,
        "isInline": attachment.is_inline,
        "contentType": attachment.content_type,
    }
    if attachment.content_id:
        item["contentId"] = attachment.content_id
    session = await sender.request(
        call,
        "POST",
        f"{base}/attachments/createUploadSession",
        content=json.dumps({"AttachmentItem": item}).encode(),
        headers=JSON,
    )
    upload_url = _json(session).get("uploadUrl")
    if not isinstance(upload_url, str) or not upload_url.startswith("https://"):
        raise MalformedMessageError("Graph's upload session has no https uploadUrl")
    offset = 0
    for chunk in decoded_chunks(outgoing.body, attachment.part, UPLOAD_CHUNK):
        end = offset + len(chunk) - 1
        await sender.request(
            call,
            "PUT",
            "upload",
            content=chunk,
            absolute_url=upload_url,
            authorize=False,  # the upload URL carries its own authorisation; a Bearer header is refused
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {offset}-{end}/{size}",
            },
        )
        offset = end + 1


async def _discard(sender: Requester, call: Call, base: str) -> None:
    # If this fails the draft stays in Drafts: harmless, and the original error matters more.
    with contextlib.suppress(DeliveryError):
        await sender.request(call, "DELETE", base)


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
