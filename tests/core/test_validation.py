"""Every rule of the connector screen (issue 2, point 2), including path injection in the tenant id."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m365relay.connectors import validation
from m365relay.errors import ValidationError

GUID = "4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71"
TODAY = date(2026, 11, 29)


def test_client_id_must_be_a_guid() -> None:
    assert validation.client_id(f"  {GUID.upper()} ") == GUID
    for bad in ("", "not-a-guid", GUID[:-1], GUID + "0", "{" + GUID + "}", "contoso.onmicrosoft.com"):
        with pytest.raises(ValidationError) as caught:
            validation.client_id(bad)
        assert caught.value.field == "OAuth Client ID"
    with pytest.raises(ValidationError, match="Application \\(client\\) ID"):
        validation.client_id("nope")


@pytest.mark.parametrize("good", [GUID, "contoso.onmicrosoft.com", "Contoso.com", "mail.example-corp.co.uk"])
def test_tenant_id_accepts_guids_and_domains(good: str) -> None:
    assert validation.tenant_id(good) == good.lower()


@pytest.mark.parametrize("alias", ["common", "organizations", "Organizations", "consumers"])
def test_tenant_id_refuses_multi_tenant_aliases(alias: str) -> None:
    with pytest.raises(ValidationError, match="is not allowed"):
        validation.tenant_id(alias)


@pytest.mark.parametrize(
    "attack",
    [
        "../common",
        "contoso.com/../../evil",
        "contoso.com/oauth2/v2.0/token?x=",
        "contoso.com#fragment",
        "contoso.com%2f..",
        "contoso.com\\evil",
        "contoso .com",
        "contoso.com\r\nHost: evil",
        "..",
        ".",
        "-contoso.com",
        "contoso-.com",
        "contoso.123",
        "localhost",
        "http://evil.example",
        "evil.example:443",
        "a" * 64 + ".com",
        "",
    ],
)
def test_tenant_id_refuses_anything_that_is_not_a_guid_or_dns_name(attack: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validation.tenant_id(attack)
    assert caught.value.field == "Tenant ID"


@given(st.text(min_size=1, max_size=80))
def test_any_accepted_tenant_is_safe_in_a_url_path(value: str) -> None:
    try:
        accepted = validation.tenant_id(value)
    except ValidationError:
        return
    assert all(c.isalnum() or c in ".-" for c in accepted)
    assert ".." not in accepted and not accepted.startswith(".")


def test_user_name_must_be_a_mailbox_address() -> None:
    assert validation.user_name(" noreply@Contoso.COM ") == "noreply@contoso.com"
    for bad in (
        "",
        "noreply",
        "noreply@",
        "@contoso.com",
        "a@b@contoso.com",
        "Name <noreply@contoso.com>",
        "no reply@contoso.com",
        "noreply@contoso",
        "noreply@contoso.com\r\nBcc: x@y.z",
    ):
        with pytest.raises(ValidationError) as caught:
            validation.user_name(bad)
        assert caught.value.field == "User Name"


def test_a_guid_shaped_secret_is_taken_for_the_secret_id() -> None:
    with pytest.raises(ValidationError) as caught:
        validation.client_secret("5fc1fcb4-6da0-4b69-8c08-073728528263")
    assert "this looks like the Secret ID; paste the secret's Value" in str(caught.value)
    assert caught.value.field == "Public Key (secret)"


def test_secret_values_are_accepted_and_junk_refused() -> None:
    value = "wY8Q~1wA5l~RCKuDZC1qCH46Xik7-wKjvFZ_lu3S"
    assert validation.client_secret(f" {value}\n") == value
    for bad in ("", "short", "has spaces inside the value", "x" * 300):
        with pytest.raises(ValidationError):
            validation.client_secret(bad)


def test_secret_expiry_window() -> None:
    assert validation.secret_expiry("2027-06-30", today=TODAY) == date(2027, 6, 30)
    assert validation.secret_expiry(TODAY, today=TODAY) == TODAY
    assert validation.secret_expiry("2028-11-29", today=TODAY) == date(2028, 11, 29)  # exactly 24 months
    with pytest.raises(ValidationError, match="in the past"):
        validation.secret_expiry("2026-11-28", today=TODAY)
    with pytest.raises(ValidationError, match="more than 24 months ahead"):
        validation.secret_expiry("2028-11-30", today=TODAY)
    with pytest.raises(ValidationError, match="not a date"):
        validation.secret_expiry("30/06/2027", today=TODAY)
    with pytest.raises(ValidationError, match="is required"):
        validation.secret_expiry(None, today=TODAY)


def test_months_are_added_by_the_calendar() -> None:
    assert validation.add_months(date(2024, 2, 29), 24) == date(2026, 2, 28)
    assert validation.add_months(date(2026, 8, 31), 1) == date(2026, 9, 30)
