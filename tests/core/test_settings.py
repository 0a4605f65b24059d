"""Settings: flags > environment > TOML file > defaults; mistakes are refused, not ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from m365relay.errors import ValidationError
from m365relay.settings import Settings, load_settings


def test_precedence(tmp_path: Path) -> None:
    config = tmp_path / "m365relay.toml"
    config.write_text('smtp_port = 587\nhttp_port = 9000\nalert_emails = ["ops@contoso.com"]\n')
    env = {
        "M365RELAY_CONFIG": str(config),
        "M365RELAY_HTTP_PORT": "9100",
        "M365RELAY_SMTP_ALLOWED_NETWORKS": "10.0.0.0/8, 192.168.1.0/24",
    }
    s = load_settings(environ=env, smtp_hostname="relay.contoso.com")
    assert (s.smtp_port, s.http_port, s.smtp_hostname) == (587, 9100, "relay.contoso.com")
    assert s.alert_emails == ["ops@contoso.com"]
    assert s.smtp_allowed_networks == ["10.0.0.0/8", "192.168.1.0/24"]
    assert load_settings(environ=env, http_port=9200).http_port == 9200


def test_typos_and_bad_values_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="smtp_prot"):
        load_settings(environ={"M365RELAY_SMTP_PROT": "25"})
    with pytest.raises(ValidationError, match="http_port"):
        load_settings(environ={"M365RELAY_HTTP_PORT": "eighty"})
    bad = tmp_path / "bad.toml"
    bad.write_text("smtp_port = ")
    with pytest.raises(ValidationError, match="not valid TOML"):
        load_settings(config_file=bad, environ={})
    with pytest.raises(ValidationError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


def test_settings_are_frozen_and_derived_values(tmp_path: Path) -> None:
    s = load_settings(environ={}, home=tmp_path)
    with pytest.raises(Exception, match="frozen"):
        s.http_port = 1  # type: ignore[misc]
    assert s.effective_database_url == f"sqlite:///{tmp_path.resolve() / 'm365relay.db'}"
    assert s.effective_public_base_url == "http://127.0.0.1:8025"


def test_every_setting_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    for name in Settings.model_fields:
        assert f"`M365RELAY_{name.upper()}`" in docs, f"{name} is missing from docs/settings.md"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://[::1/hooks/T0KEN-1", "not a valid URL"),
        ("ftp://hooks.example/T0KEN-1", "http:// or https://"),
        ("https:///T0KEN-1", "http:// or https://"),
    ],
)
def test_a_webhook_url_is_checked_at_start_without_repeating_it(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as refused:
        load_settings(environ={"M365RELAY_ALERT_WEBHOOK_URL": url}, home=tmp_path)
    assert "T0KEN" not in str(refused.value), "a webhook URL is a credential: the error must not show it"
    ok = load_settings(environ={"M365RELAY_ALERT_WEBHOOK_URL": "https://hooks.example/T0KEN"}, home=tmp_path)
    assert ok.alert_webhook_url == "https://hooks.example/T0KEN"
