"""``m365relay demo``'s admin consent round trip in a real browser (issue 17, item 3): the demo registers its
own Redirect URL on the sandbox app, as the manual tells an admin to, so *Grant admin consent* goes to the
sandbox's consent page and, after Accept, comes back to the relay's /admin/connectors/SMTP.aspx — on the
default ports and on ports chosen by the demo. Before, the sandbox stopped it with AADSTS50011.

Also the sandbox's App registrations page as the manual's Azure steps use it: the Redirect URI is listed,
a new client secret's Value and Secret ID are shown once, and the Value works at the token endpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from admin_support import ARTIFACTS
from playwright.sync_api import Browser, Page, expect, sync_playwright

from m365relay.demo import DEFAULT_HTTP_PORT, DEFAULT_SANDBOX_PORT, DEFAULT_SMTP_PORT, port_is_free

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"browser tests need {CHROMIUM}"),
]


class DemoProcess:
    def __init__(self, home: Path, args: list[str]) -> None:
        env = {**os.environ, "M365RELAY_HOME": str(home), "COLUMNS": "250"}
        env.pop("M365RELAY_CONFIG", None)
        env.pop("M365RELAY_PUBLIC_BASE_URL", None)
        self.home = home
        self.log = (home.parent / "demo.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "m365relay", "demo", *args], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def info(self, timeout: float = 120) -> dict[str, Any]:
        path = self.home / "demo.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                loaded: dict[str, Any] = json.loads(path.read_text())
                return loaded
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.2)
        pytest.fail(f"no demo.json after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, info: dict[str, Any], path: str) -> None:
    page.goto(info["http_url"] + path)
    page.get_by_label("Username").fill(info["admin_user"])
    page.get_by_label("Password").fill(info["admin_password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {info['admin_user']}")).to_be_visible()


def consent_round_trip(browser: Browser, info: dict[str, Any], label: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        sign_in(page, info, "/admin/connectors/smtp")
        redirect = page.get_by_label("Redirect URL to register").input_value()
        assert redirect == info["http_url"] + "/admin/connectors/SMTP.aspx"
        page.get_by_role("button", name="Grant admin consent").click()
        expect(page.get_by_role("heading", name="Permissions requested")).to_be_visible()
        assert page.url.startswith(info["sandbox_url"])
        shot(page, f"sandbox-consent-{label}")
        page.get_by_role("button", name="Accept").click()
        expect(page).to_have_url(re.compile(re.escape(info["http_url"] + "/admin/connectors/smtp") + "#consent$"))
        expect(page.get_by_text("Admin consent granted", exact=True)).to_be_visible()
        expect(page.get_by_text("Confirmed: a fresh token for")).to_contain_text("Mail.Send")
        shot(page, f"demo-consent-granted-{label}")
    finally:
        context.close()


def test_demo_consent_round_trip_on_ports_the_demo_chose(browser: Browser, tmp_path: Path) -> None:
    demo = DemoProcess(tmp_path / "home", ["--http-port", "0", "--smtp-port", "0", "--sandbox-port", "0"])
    try:
        info = demo.info()
        assert not info["http_url"].endswith(f":{DEFAULT_HTTP_PORT}")
        consent_round_trip(browser, info, "free-ports")
    finally:
        demo.stop()


def test_demo_consent_round_trip_on_the_default_ports(browser: Browser, tmp_path: Path) -> None:
    busy = [p for p in (DEFAULT_HTTP_PORT, DEFAULT_SMTP_PORT, DEFAULT_SANDBOX_PORT) if not port_is_free("127.0.0.1", p)]
    if busy:
        pytest.skip(f"default port(s) {busy} are in use on this machine (another run of the demo?)")
    demo = DemoProcess(tmp_path / "home", [])
    try:
        info = demo.info()
        if not info["http_url"].endswith(f":{DEFAULT_HTTP_PORT}"):
            pytest.skip("a default port was taken between the check and the demo's start")
        consent_round_trip(browser, info, "default-ports")
    finally:
        demo.stop()


def test_sandbox_app_registrations_rehearse_the_manual(browser: Browser, tmp_path: Path) -> None:
    """Register Application › Redirect URI, Create Client Secret (Value and Secret ID once), API permissions."""
    demo = DemoProcess(tmp_path / "home", ["--http-port", "0", "--smtp-port", "0", "--sandbox-port", "0"])
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        info = demo.info()
        page.goto(info["sandbox_url"] + "/portal/apps")
        expect(page.get_by_role("heading", name="App registrations")).to_be_visible()
        shot(page, "sandbox-app-registrations")
        page.locator("table a").first.click()
        client_id, tenant_id = page.locator("#client-id").inner_text(), page.locator("#tenant-id").inner_text()
        # The demo registered the relay's Redirect URL, as the manual's step (C) asks.
        expect(page.locator("#redirect-uris")).to_contain_text(info["http_url"] + "/admin/connectors/SMTP.aspx")
        page.get_by_label("Add URI").fill("http://relay.example.com/admin/connectors/SMTP.aspx")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("alert")).to_contain_text("http:// is allowed only for localhost")
        page.get_by_label("Add URI").fill("https://relay.example.com/admin/connectors/SMTP.aspx")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#redirect-uris")).to_contain_text("https://relay.example.com/admin/connectors/SMTP.aspx")
        # New client secret: Description, Expires; the Value and the Secret ID once.
        page.get_by_label("Description").fill("rehearsal")
        page.get_by_label("Expires").select_option("12")
        page.get_by_role("button", name="Add", exact=True).click()
        value, secret_id = page.locator("#secret-value").inner_text(), page.locator("#secret-id").inner_text()
        assert value[3:5] == "Q~" and len(secret_id) == 36
        shot(page, "sandbox-app-new-secret")
        page.reload()
        assert value not in page.content(), "the Value is shown once, right after Add"
        expect(page.get_by_text(f"{value[:3]}*******")).to_be_visible()
        # API permissions as the manual adds them; the new Value gets a token with those roles.
        expect(page.locator("#permissions")).to_contain_text("Microsoft Graph › Mail.Send")
        page.get_by_role("button", name=re.compile("^Grant admin consent for")).click()
        expect(page.locator("#permissions")).to_contain_text("Granted for")
        shot(page, "sandbox-app-permissions")
        ca = ssl.create_default_context(cafile=str(tmp_path / "home" / "sandbox" / "ca.pem"))
        with httpx.Client(base_url=info["sandbox_url"], verify=ca, timeout=30) as http:
            token = http.post(
                f"/{tenant_id}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": value,
                    "scope": "https://graph.microsoft.com/.default",
                },
            )
            assert token.status_code == 200, token.text
            wrong = http.post(
                f"/{tenant_id}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret_id,
                    "scope": "https://graph.microsoft.com/.default",
                },
            )
            assert "AADSTS7000215" in wrong.json()["error_description"]  # the Secret ID is not the secret
    finally:
        context.close()
        demo.stop()
