"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in test_schemathesis.py: how to make a ``message/rfc822``
body. schemathesis cannot derive one from the schema (``format: binary``), so it is told: RFC 5322 header
fields, a blank line and a body, with CRLF line ends. These are the bodies the schema promises to take (the
positive cases); schemathesis' negative cases break the rest of the request."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_ADDRESS = st.sampled_from(["a@example.com", "b@example.org", "Ann <c@example.com>", "c@example.com, d@example.com"])


def _message(to: str, subject: str, body: str, extra: list[tuple[str, str]]) -> bytes:
    head = [f"To: {to}", f"Subject: {subject}", *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


RFC822 = st.builds(
    _message,
    _ADDRESS,
    _TEXT,
    _TEXT,
    st.lists(st.tuples(st.sampled_from(["X-Tag", "X-Request-Id", "Comments"]), _TEXT), max_size=3),
)

schemathesis.openapi.media_type("message/rfc822", RFC822)


@schemathesis.hook
def after_call(context: schemathesis.HookContext, case: schemathesis.Case, response: schemathesis.Response) -> None:
    """Take back every suppression the fuzzer adds: a suppressed address makes a later schema-valid message to
    it a (right) 422 recipient-suppressed, which schemathesis would report as a schema-valid request refused.
    The removal goes through the API, with the run's own key."""
    if case.method.upper() != "POST" or not case.path.endswith("/suppressions") or response.status_code != 201:
        return
    import requests

    entry = response.json()
    url = response.request.url or ""
    requests.delete(
        url.split("?")[0],
        params={"address": entry["address"]},  # the run has one connector: the default
        headers={"Authorization": str(response.request.headers.get("Authorization", ""))},
        timeout=30,
    ).raise_for_status()
