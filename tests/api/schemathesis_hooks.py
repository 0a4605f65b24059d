"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in test_schemathesis.py: how to make a ``message/rfc822``
body. schemathesis cannot derive one from the schema (``format: binary``), so it is told: RFC 5322 header
fields, a blank line and a body, with CRLF line ends — sometimes well-formed, sometimes not."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_ADDRESS = st.sampled_from(["a@example.com", "b@example.org", "not an address", "", "c@example.com, d@example.com"])


def _message(to: str, subject: str, body: str, extra: list[tuple[str, str]]) -> bytes:
    head = [f"To: {to}", f"Subject: {subject}", *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


RFC822 = st.one_of(
    st.builds(
        _message,
        _ADDRESS,
        _TEXT,
        _TEXT,
        st.lists(st.tuples(st.sampled_from(["Cc", "X-Tag", "Reply-To", "From"]), _TEXT), max_size=3),
    ),
    st.binary(max_size=200),  # anything at all: must be a 4xx, never a 5xx
)

schemathesis.openapi.media_type("message/rfc822", RFC822)
