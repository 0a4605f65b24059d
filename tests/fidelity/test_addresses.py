"""The one address parser (m365relay.addresses): what is one mailbox, what is not, and how names are written."""

from __future__ import annotations

import email
import email.policy

import pytest

from m365relay.addresses import Mailbox, deliverable, fold, format_mailbox, parse_list, parse_mailbox


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ann@example.com", [("", "ann@example.com")]),
        ('"Doe, John" <jd@example.com>', [("Doe, John", "jd@example.com")]),
        ("=?utf-8?q?Doe=2C_John?= <jd@example.com>", [("Doe, John", "jd@example.com")]),
        ("John Q. Public <jqp@example.com>, b@example.org", [("John Q. Public", "jqp@example.com"),
                                                            ("", "b@example.org")]),
        ("team: a@example.com, b@example.com;", [("", "a@example.com"), ("", "b@example.com")]),
        ("undisclosed-recipients:;", []),
        ("a@example.com (the admin)", [("", "a@example.com")]),
    ],
)  # fmt: skip
def test_mailboxes_are_read(value: str, expected: list[tuple[str, str]]) -> None:
    found = [(e.mailbox.display_name, e.mailbox.addr_spec) for e in parse_list(value) if e.mailbox]
    assert found == expected
    assert all(e.mailbox for e in parse_list(value))


@pytest.mark.parametrize(
    "value", ["XX", "Array", "<matmail>", "a@b@c", "eve@example.com <frank@example.com>", "a@", "@b.com", "a..b@c.com"]
)
def test_entries_that_are_not_one_mailbox_are_not_guessed(value: str) -> None:
    [entry] = parse_list(value)
    assert entry.mailbox is None and entry.problem


def test_two_addresses_where_one_is_wanted_are_refused() -> None:
    with pytest.raises(ValueError, match="holds 2 addresses"):
        parse_mailbox("a@x.com, b@y.com")


def test_one_delivery_rule() -> None:
    assert deliverable("ann@example.com") is None
    assert "fully qualified" in (deliverable("user@localhost") or "")
    assert "literal" in (deliverable("user@[192.0.2.1]") or "")
    assert deliverable("Ann <ann@example.com>") is not None  # the envelope takes bare addresses


@pytest.mark.parametrize(
    "name", ["Doe, John (Accounts Payable)", "alice@example.com", 'John "Johnny" Doe', "Jürgen Müller"]
)
def test_written_names_read_back_as_the_same_name_and_address(name: str) -> None:
    value = format_mailbox(Mailbox("noreply", "contoso.com", name))
    assert '"=?' not in value
    [entry] = parse_list(value)
    assert entry.mailbox == Mailbox("noreply", "contoso.com", name)
    parsed = email.message_from_bytes(fold("From", value) + b"\r\n", policy=email.policy.default)
    address = parsed["From"].addresses[0]
    assert (address.display_name, address.addr_spec) == (name, "noreply@contoso.com")


def test_long_lists_are_folded_between_entries() -> None:
    folded = fold("To", ", ".join(f"Person {i} <person{i}@example.com>" for i in range(8)))
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))
    assert len(parse_list(folded.decode().partition(":")[2])) == 8
