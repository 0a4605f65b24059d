"""A streaming MIME structure walker for messages too large to parse in memory.

It reads a seekable stream line by line, records where each leaf part's body starts and ends (RFC 2046
§5.1.1 boundaries), and parses only the small header blocks. Attachment bodies are then decoded chunk by
chunk straight from the stream (``decoded_chunks``), so a 35 MB message costs a few megabytes of memory
on the way to Graph's upload sessions.
"""

from __future__ import annotations

import base64
import binascii
import quopri
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import BinaryIO

from ..errors import MalformedMessageError

MAX_DEPTH = 20


@dataclass
class Part:
    headers: EmailMessage
    body_start: int
    body_end: int
    children: list[Part] = field(default_factory=list)
    # The bytes to cut to remove this part from its parent: from the line end before its delimiter to the
    # end of its body (RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter).
    cut_start: int = 0
    cut_end: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get_content_type()

    @property
    def is_multipart(self) -> bool:
        return self.headers.get_content_maintype() == "multipart"

    @property
    def filename(self) -> str | None:
        return self.headers.get_filename()

    @property
    def disposition(self) -> str | None:
        return self.headers.get_content_disposition()

    @property
    def content_id(self) -> str | None:
        value = self.headers.get("Content-ID")
        return str(value).strip().strip("<>") if value else None

    @property
    def encoding(self) -> str:
        return str(self.headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()

    @property
    def size(self) -> int:
        return self.body_end - self.body_start

    def leaves(self) -> Iterator[Part]:
        if not self.children:
            yield self
        for child in self.children:
            yield from child.leaves()


def walk(stream: BinaryIO, start: int = 0, end: int | None = None) -> Part:
    """The MIME tree of the entity between ``start`` and ``end`` (default: to the end of the stream)."""
    return _walk(stream, start, end if end is not None else _length(stream), 0)


def walk_body(stream: BinaryIO, headers: EmailMessage, start: int, end: int | None = None) -> Part:
    """The MIME tree of a message whose (possibly edited) headers are held apart from its body."""
    return _build(stream, headers, start, end if end is not None else _length(stream), 0)


def decoded_chunks(stream: BinaryIO, part: Part, chunk_size: int) -> Iterator[bytes]:
    """The part's decoded content in chunks of exactly ``chunk_size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    for piece in _decoded_pieces(stream, part):
        buffer += piece
        while len(buffer) >= chunk_size:
            yield bytes(buffer[:chunk_size])
            del buffer[:chunk_size]
    if buffer:
        yield bytes(buffer)


def decoded_size(stream: BinaryIO, part: Part) -> int:
    """Exact decoded size, computed by streaming (Graph needs it before the upload starts)."""
    return sum(len(p) for p in _decoded_pieces(stream, part))


def read_decoded(stream: BinaryIO, part: Part) -> bytes:
    return b"".join(_decoded_pieces(stream, part))


# -- internals ------------------------------------------------------------------------------------


def _length(stream: BinaryIO) -> int:
    here = stream.tell()
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(here)
    return size


def _walk(stream: BinaryIO, start: int, end: int, depth: int) -> Part:
    if depth > MAX_DEPTH:
        raise MalformedMessageError("MIME parts are nested too deeply")
    stream.seek(start)
    header_lines: list[bytes] = []
    pos = start
    while pos < end:
        line = stream.readline(min(end - pos, 64 * 1024))
        if not line:
            break
        pos += len(line)
        if line in (b"\r\n", b"\n"):
            break
        header_lines.append(line)
    headers = BytesHeaderParser(policy=policy.default).parsebytes(b"".join(header_lines) + b"\r\n")
    assert isinstance(headers, EmailMessage)
    return _build(stream, headers, pos, end, depth)


def _build(stream: BinaryIO, headers: EmailMessage, pos: int, end: int, depth: int) -> Part:
    part = Part(headers, pos, end)
    boundary = headers.get_boundary() if headers.get_content_maintype() == "multipart" else None
    if boundary:
        for start, stop, cut in _child_ranges(stream, pos, end, boundary):
            child = _walk(stream, start, stop, depth + 1)
            child.cut_start, child.cut_end = cut, stop
            part.children.append(child)
    return part


def _child_ranges(stream: BinaryIO, start: int, end: int, boundary: str) -> list[tuple[int, int, int]]:
    """Byte ranges of the body parts between ``--boundary`` delimiter lines (RFC 2046 §5.1.1): the CRLF
    before a delimiter belongs to the delimiter, not to the part. Each with where its cut starts."""
    delimiter = b"--" + boundary.encode("ascii", "replace")
    ranges: list[tuple[int, int, int]] = []
    stream.seek(start)
    pos, part_start, previous_eol, cut = start, None, 0, start
    while pos < end:
        line = stream.readline(min(end - pos, 1024 * 1024))
        if not line:
            break
        line_start, pos = pos, pos + len(line)
        if line.startswith(delimiter):
            rest = line[len(delimiter) :].rstrip(b" \t\r\n")
            if rest in (b"", b"--"):
                if part_start is not None:
                    ranges.append((part_start, line_start - previous_eol, cut))
                if rest == b"--":
                    return ranges
                part_start, cut = pos, max(start, line_start - previous_eol)
        previous_eol = 2 if line.endswith(b"\r\n") else (1 if line.endswith(b"\n") else 0)
    if part_start is not None:  # no closing delimiter: be lenient, as mail clients are
        ranges.append((part_start, end, cut))
    return ranges


def _raw_lines(stream: BinaryIO, part: Part) -> Iterator[bytes]:
    stream.seek(part.body_start)
    pos = part.body_start
    while pos < part.body_end:
        line = stream.readline(min(part.body_end - pos, 1024 * 1024))
        if not line:
            return
        pos += len(line)
        yield line


def _decoded_pieces(stream: BinaryIO, part: Part) -> Iterator[bytes]:
    encoding = part.encoding
    if encoding == "base64":
        yield from _base64_pieces(_raw_lines(stream, part))
    elif encoding == "quoted-printable":
        pending = b""
        for line in _raw_lines(stream, part):
            pending += line
            # Decode at hard line breaks only: a soft break ("=" before CRLF) continues the line.
            if not pending.rstrip(b"\r\n").endswith(b"="):
                yield quopri.decodestring(pending)
                pending = b""
        if pending:
            yield quopri.decodestring(pending)
    else:  # 7bit, 8bit, binary
        yield from _raw_lines(stream, part)


def _base64_pieces(lines: Iterator[bytes]) -> Iterator[bytes]:
    carry = b""
    batch: list[bytes] = []
    batched = 0
    for line in lines:
        clean = line.strip()
        batch.append(clean)
        batched += len(clean)
        if batched >= 256 * 1024:
            data = carry + b"".join(batch)
            usable = len(data) - len(data) % 4
            yield _b64(data[:usable])
            carry, batch, batched = data[usable:], [], 0
    data = carry + b"".join(batch)
    if data:
        yield _b64(data + b"=" * (-len(data) % 4))


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=False)
    except binascii.Error as exc:
        raise MalformedMessageError("an attachment's base64 content is corrupt") from exc
