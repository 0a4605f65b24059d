"""The one address parser: every way in (SMTP envelope and headers, the HTTP API, the CLI, the library, the
Django backend) and every edit (envelope alignment, the From policy) reads and writes addresses here.

Reading is strict RFC 5322 §3.4 (with the obsolete forms of §4.4 that real mail uses: ``John Q. Public``
as a phrase, comments anywhere). An entry that does not parse as exactly one mailbox is *not an address*:
the relay never guesses. That matters because Exchange reads ``eve@example.com <frank@example.com>`` as
Frank, a tolerant parser reads it as Eve, and a relay that checks with one reading while Exchange delivers
with the other sends mail to someone the envelope never named.

Writing builds a header value from structured values: a display name is written as atoms when it is only
atext and spaces, as a quoted string when it is ASCII, and as one RFC 2047 encoded-word (UTF-8, B) when it
is not — never an encoded-word inside a quoted string (RFC 2047 §5 (3)).

Delivery rule (one for every path): the domain must be a fully qualified host name — at least two labels,
LDH or internationalised (RFC 5321 §2.3.5, RFC 5890). ``user@localhost`` and address literals are refused:
Exchange Online routes mail by DNS and cannot deliver to either.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header

_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+$")
_PHRASE_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\- ]+$")  # what may stand unquoted in a phrase
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9\-\u0080-\U0010ffff]{1,63}(?<!-)$")
_ENCODED_WORD = re.compile(r"^=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=$")
_SPECIALS = '()<>[]:;@\\,."'
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AddressError(ValueError):
    """Not an address; the message says why, in words a sender can act on."""


@dataclass(frozen=True)
class Mailbox:
    local: str
    domain: str
    display_name: str = ""  # decoded (RFC 2047), as a reader sees it

    @property
    def addr_spec(self) -> str:
        local = self.local if _dot_atom(self.local) else _quote(self.local)
        return f"{local}@{self.domain}"


@dataclass(frozen=True)
class Entry:
    """One comma-separated entry of an address list: a mailbox, or the reason it is not one."""

    text: str
    mailbox: Mailbox | None
    problem: str | None = None


# -- reading ---------------------------------------------------------------------------------------


def parse_list(value: str) -> list[Entry]:
    """The entries of an address-list header value (unfolded or not). Groups (``team: a@x, b@y;``) give
    their members; an empty group (``undisclosed-recipients:;``) gives nothing."""
    entries: list[Entry] = []
    for text in _split(value):
        entries.extend(_entries(text))
    return entries


def parse_mailbox(text: str) -> Mailbox:
    """Exactly one mailbox (``Ann <a@example.com>`` or ``a@example.com``), else ``AddressError``."""
    found = parse_list(text)
    if len(found) != 1:
        raise AddressError(f"{text.strip()!r} holds {len(found)} addresses; give exactly one")
    entry = found[0]
    if entry.mailbox is None:
        raise AddressError(f"{text.strip()!r} is not an e-mail address: {entry.problem}")
    return entry.mailbox


def parse_addr_spec(text: str) -> Mailbox:
    """A bare address as an SMTP envelope or an API ``to`` names it (no display name, no angle brackets)."""
    tokens = _tokens(text.strip())
    if any(kind == "angle" for kind, _ in tokens):
        raise AddressError(f"{text.strip()!r}: give the bare address, without a name or angle brackets")
    return _addr_spec(tokens, text.strip())


def deliverable(text: str) -> str | None:
    """``None`` if Graph can deliver to this bare address; otherwise why not."""
    try:
        mailbox = parse_addr_spec(text)
    except AddressError as exc:
        return str(exc)
    return routable(mailbox)


def routable(mailbox: Mailbox) -> str | None:
    """``None`` if Exchange Online can route to the mailbox's domain: a fully qualified name (two labels or
    more). ``user@localhost`` is a valid From or Reply-To, but no recipient."""
    if "." not in mailbox.domain:
        return f"{mailbox.domain!r} is not a fully qualified domain (Exchange Online cannot route to it)"
    return None


# -- writing ---------------------------------------------------------------------------------------


def format_mailbox(mailbox: Mailbox) -> str:
    """A mailbox for a header (``name <addr>`` or ``addr``), the display name safely quoted or encoded."""
    name = " ".join(mailbox.display_name.split())
    if not name:
        return mailbox.addr_spec
    return f"{format_phrase(name)} <{mailbox.addr_spec}>"


def format_phrase(name: str) -> str:
    if not name.isascii():
        # One encoded-word per 45 bytes of UTF-8 keeps each under 75 characters (RFC 2047 §2).
        data = name.encode("utf-8")
        words, start = [], 0
        while start < len(data):
            end = min(start + 45, len(data))
            while end < len(data) and (data[end] & 0xC0) == 0x80:
                end -= 1  # never split a UTF-8 sequence between two words
            words.append("=?utf-8?b?" + base64.b64encode(data[start:end]).decode("ascii") + "?=")
            start = end
        return " ".join(words)
    if _PHRASE_ATOM.match(name) and not any(_ENCODED_WORD.match(w) for w in name.split()):
        return name
    return _quote(name)


def format_list(mailboxes: list[Mailbox]) -> str:
    return ", ".join(format_mailbox(m) for m in mailboxes)


def fold(name: str, value: str) -> bytes:
    """``Name: value`` CRLF, folded before list entries so that lines stay under 78 characters where the
    entries allow it (RFC 5322 §2.2.3); never folded inside an entry."""
    parts = value.split(", ")
    lines, line = [], f"{name}:"
    for index, part in enumerate(parts):
        piece = part + ("," if index < len(parts) - 1 else "")
        if len(line) + 1 + len(piece) > 78 and line != f"{name}:":
            lines.append(line)
            line = " " + piece
        else:
            line += " " + piece
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# -- internals -------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_atom(text: str) -> bool:
    return bool(text) and all(_ATEXT.match(part) for part in text.split("."))


def _split(value: str) -> list[str]:
    """Top-level comma-separated pieces (commas inside quotes, comments, angles or groups do not split;
    a group's members are split later)."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value)
    pieces: list[str] = []
    current: list[str] = []
    depth, quoted, angle, escaped = 0, False, False, False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"' and not depth:
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth:
            pass
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    return [p for p in pieces if p.strip()]


def _entries(text: str) -> list[Entry]:
    shown = " ".join(text.split())
    try:
        tokens = _tokens(text)
    except AddressError as exc:
        return [Entry(shown, None, str(exc))]
    if any(kind == ":" for kind, _ in tokens) and not any(kind == "angle" for kind, _ in tokens[:1]):
        colon = next(i for i, (kind, _) in enumerate(tokens) if kind == ":")
        if all(kind in ("atom", "qs", ".") for kind, _ in tokens[:colon]):
            return _group(tokens[colon + 1 :], shown)
    if tokens and tokens[-1][0] == ";":
        tokens = tokens[:-1]  # the end of a group whose first member came in an earlier piece
    try:
        return [Entry(shown, _mailbox(tokens, shown))]
    except AddressError as exc:
        return [Entry(shown, None, str(exc))]


def _group(tokens: list[tuple[str, str]], shown: str) -> list[Entry]:
    """The members of a group (its first member is in this piece; later ones arrive as their own pieces,
    so the closing ``;`` may come with any of them)."""
    members = [t for t in tokens if t[0] != ";"]
    if not members:
        return []
    try:
        return [Entry(shown, _mailbox(members, shown))]
    except AddressError as exc:
        return [Entry(shown, None, str(exc))]


def _tokens(text: str) -> list[tuple[str, str]]:
    """RFC 5322 §3.2 lexical tokens; comments and folding white space are dropped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "(":
            i = _skip_comment(text, i)
        elif ch == '"':
            i, value = _quoted(text, i)
            out.append(("qs", value))
        elif ch == "<":
            end = text.find(">", i)
            if end < 0:
                raise AddressError("'<' is never closed")
            out.append(("angle", text[i + 1 : end]))
            i = end + 1
        elif ch == "[":
            end = text.find("]", i)
            if end < 0:
                raise AddressError("'[' is never closed")
            out.append(("dlit", text[i : end + 1]))
            i = end + 1
        elif ch in _SPECIALS:
            out.append((ch, ch))
            i += 1
        else:
            start = i
            while i < n and text[i] not in _SPECIALS and text[i] not in " \t\r\n":
                i += 1
            out.append(("atom", text[start:i]))
    return out


def _skip_comment(text: str, i: int) -> int:
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        depth += ch == "("
        depth -= ch == ")"
        i += 1
        if depth == 0:
            return i
    raise AddressError("a comment '(' is never closed")


def _quoted(text: str, i: int) -> tuple[int, str]:
    out, i = [], i + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == '"':
            return i + 1, "".join(out)
        else:
            out.append(ch)
            i += 1
    raise AddressError("a quoted string is never closed")


def _mailbox(tokens: list[tuple[str, str]], shown: str) -> Mailbox:
    angles = [i for i, (kind, _) in enumerate(tokens) if kind == "angle"]
    if not angles:
        return _addr_spec(tokens, shown)
    if len(angles) > 1 or angles[0] != len(tokens) - 1:
        raise AddressError("more than one address, or text after the '>'")
    phrase = tokens[: angles[0]]
    bad = next((value for kind, value in phrase if kind not in ("atom", "qs", ".")), None)
    if bad is not None:
        raise AddressError(f"{bad!r} cannot stand in a display name unquoted (it reads as a second address)")
    inner = tokens[angles[0]][1]
    route = re.match(r"^\s*(@[^:]+:)", inner)  # obs-route (RFC 5322 §4.4): ignored, as readers do
    address = _addr_spec(_tokens(inner[route.end() :] if route else inner), shown)
    return Mailbox(address.local, address.domain, _display_name(phrase))


def _addr_spec(tokens: list[tuple[str, str]], shown: str) -> Mailbox:
    ats = [i for i, (kind, _) in enumerate(tokens) if kind == "@"]
    if not ats:
        raise AddressError("no '@'")
    if len(ats) > 1:
        raise AddressError("more than one '@'")
    local_tokens, domain_tokens = tokens[: ats[0]], tokens[ats[0] + 1 :]
    local = _local_part(local_tokens)
    domain = _domain(domain_tokens)
    if len(local.encode("utf-8")) > 64:
        raise AddressError("the local part is longer than 64 octets (RFC 5321 §4.5.3.1.1)")
    return Mailbox(local, domain)


def _local_part(tokens: list[tuple[str, str]]) -> str:
    if not tokens:
        raise AddressError("nothing before the '@'")
    words: list[str] = []
    for index, (kind, value) in enumerate(tokens):
        want_word = index % 2 == 0
        if want_word and kind in ("atom", "qs"):
            if kind == "atom" and not _ATEXT.match(value):
                raise AddressError(f"{value!r} is not allowed in a local part")
            words.append(value)
        elif not want_word and kind == ".":
            continue
        else:
            raise AddressError(f"{value!r} is not allowed in a local part")
    if len(tokens) % 2 == 0:
        raise AddressError("the local part ends with '.'")
    local = ".".join(words)
    if _CONTROL.search(local):
        raise AddressError("control characters in the local part")
    return local


def _domain(tokens: list[tuple[str, str]]) -> str:
    if not tokens:
        raise AddressError("nothing after the '@'")
    if tokens[0][0] == "dlit":
        raise AddressError("an address literal ([...]) cannot be delivered by Exchange Online")
    text = "".join(value for _, value in tokens)
    if any(kind not in ("atom", ".") for kind, _ in tokens):
        raise AddressError(f"{text!r} is not a domain")
    labels = text.split(".")
    if len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise AddressError(f"{text!r} is not a valid domain name")
    return text


def _display_name(phrase: list[tuple[str, str]]) -> str:
    """The phrase as a reader shows it: RFC 2047 words decoded (white space between two encoded-words
    vanishes, §6.2), quoted strings unquoted."""
    if not phrase:
        return ""
    if len(phrase) == 1 and phrase[0][0] == "qs":
        raw = phrase[0][1]
    else:  # a quoted word among atoms keeps its quotes: `John "Johnny" Doe` is what the reader sees
        raw = " ".join(value if kind != "qs" else _quote(value) for kind, value in phrase)
    raw = raw.replace(" . ", ". ").replace(" .", ".")
    if "=?" not in raw:
        return " ".join(raw.split())
    try:
        decoded = str(make_header(decode_header(raw)))
    except (HeaderParseError, ValueError, LookupError, UnicodeError):
        return " ".join(raw.split())
    if _CONTROL.search(decoded):
        raise AddressError("the display name decodes to control characters (a line break inside an encoded-word)")
    return " ".join(decoded.split())
