"""Everything in the admin UI, in headless Chromium against a live ``serve`` (HTTP, SMTP, dispatcher) and the
sandbox (issue 17, item 4 and 5): create a second connector, add a relay user bound to it and send through it
with smtplib, create an API key bound to it and send with it, revoke the key (the API then answers 401), set a
relay user's password, delete a relay user, and see the dashboard count what was sent. Every page visited
passes an axe-style check written here: every visible form control has a label (``<label for>``, a wrapping
label, ``aria-label`` or ``aria-labelledby``) and every button a name. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from admin_support import ADMIN_PASSWORD, ADMIN_USER, ARTIFACTS, LiveServer, create_admin, free_port
from playwright.sync_api import Browser, Page, expect, sync_playwright

from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.settings import Settings
from support import SandboxAdmin, connector_update, make_settings

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"browser tests need {CHROMIUM}"),
]

# Controls without an accessible name, found the way axe's "label" and "button-name" rules look for them.
UNLABELLED_JS = """
() => {
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const named = (el) => (el.labels && el.labels.length > 0) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby') || el.closest('label');
  const out = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || !visible(el)) continue;
    if (!named(el)) out.push(el.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll('button')) {
    if (visible(el) && !(el.textContent.trim() || el.getAttribute('aria-label'))) out.push(el.outerHTML.slice(0, 120));
  }
  return out;
}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home", http_port=free_port(), smtp_port=free_port(), smtp_host="127.0.0.1")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)  # the real clock: the dispatcher sends while the browser watches
    yield rt
    rt.close()


@pytest.fixture
def live(runtime: Runtime, sandbox: SandboxServer) -> Iterator[LiveServer]:
    create_admin(runtime)
    runtime.connectors.save("default", connector_update(sandbox))
    server = LiveServer(runtime, worker=True, smtp=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, live: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    try:
        yield tab
    finally:
        context.close()


def check_page(page: Page, name: str) -> None:
    """Labels on every control, then a full-page screenshot."""
    missing = page.evaluate(UNLABELLED_JS)
    assert missing == [], f"{name}: controls without a label or name: {missing}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_for(condition: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout} s")


def test_connectors_users_keys_and_the_dashboard(
    page: Page, live: LiveServer, runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    demo = admin.demo
    admin.grant("Mail.Send")
    page.goto(live.url + "/admin/")
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {ADMIN_USER}")).to_be_visible()

    # A second connector, through Connectors › New connector, with the manual's fields.
    page.get_by_role("link", name="Connectors", exact=True).click()
    expect(page.get_by_role("heading", name="Connectors", exact=True)).to_be_visible()
    check_page(page, "admin-connectors")
    page.get_by_role("link", name="New connector").click()
    page.locator("#f-name").fill("Billing Dept")  # refused: the CLI's rule for names
    page.get_by_label("OAuth Client ID").fill(demo["client_id"])
    page.get_by_label("Tenant ID").fill(demo["tenant_id"])
    page.get_by_label("User Name").fill(demo["mailbox"])
    page.get_by_label("Cloud", exact=True).select_option("custom")
    page.get_by_label("Login URL").fill(sandbox.url)
    page.get_by_label("Graph URL").fill(sandbox.url)
    page.get_by_label("CA file").fill(str(sandbox.ca_file))
    check_page(page, "admin-connector-new")
    page.get_by_role("button", name="Create connector").click()
    expect(page.locator("#error-summary")).to_contain_text("'Billing Dept' is not allowed")
    page.locator("#f-name").fill("billing")
    page.get_by_label("Public Key (secret)").fill(demo["secret_value"])
    page.get_by_label("Secret expires").fill((date.today() + timedelta(days=180)).isoformat())
    page.get_by_role("button", name="Create connector").click()
    expect(page.get_by_text("Connector billing created.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/connectors/edit/billing#settings$"))
    expect(page.locator("#stored-credential")).to_contain_text("expires on")
    assert demo["secret_value"] not in page.content()
    check_page(page, "admin-connector-billing")
    billing = runtime.connectors.get("billing")

    # A relay user bound to it; the generated password is shown once; smtplib sends through it.
    page.get_by_role("link", name="Relay users").click()
    page.get_by_label("Username").fill("scanner")
    page.get_by_label("Allowed From").fill("app@example.com")
    page.locator("#f-connector").select_option("billing")
    page.get_by_role("button", name="Add relay user").click()
    password = page.locator("#new-password").input_value()
    assert len(password) >= 12
    check_page(page, "admin-relay-users")
    assert live.smtp_port is not None
    with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as client:
        client.login("scanner", password)
        body = "From: app@example.com\r\nTo: team@contoso.com\r\nSubject: via relay user\r\n\r\nHello.\r\n"
        client.sendmail("app@example.com", ["team@contoso.com"], body)
    wait_for(lambda: [m for m in admin.messages() if m["subject"] == "via relay user"], "the SMTP message arrived")

    # An API key bound to it: shown once; it sends; revoked, it gets 401.
    page.get_by_role("link", name="API keys").click()
    page.locator("#f-name").fill("portal")
    page.locator("#f-connector").select_option("billing")
    page.get_by_role("button", name="Create API key").click()
    key = page.locator("#new-key").input_value()
    assert key.startswith("m365r_")
    check_page(page, "admin-api-keys")
    message = {"to": ["team@contoso.com"], "subject": "via api key", "text": "Hello."}
    with httpx.Client(base_url=live.url, timeout=30) as http:
        sent = http.post("/api/v1/messages", json=message, headers={"Authorization": f"Bearer {key}"})
        assert sent.status_code == 202, sent.text
        wait_for(lambda: [m for m in admin.messages() if m["subject"] == "via api key"], "the API message arrived")
        page.reload()
        assert key not in page.content(), "the key is shown once"
        page.get_by_role("button", name="Revoke portal").click()
        expect(page.get_by_text("API key portal revoked")).to_be_visible()
        refused = http.post("/api/v1/messages", json=message, headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 401
    with runtime.db.read() as session:
        from sqlalchemy import text

        connectors = {row[0] for row in session.execute(text("SELECT DISTINCT connector_id FROM messages"))}
    assert connectors == {billing.id}, "both went through the second connector"

    # A relay user's password and deletion.
    page.get_by_role("link", name="Relay users").click()
    user = page.locator("article[data-user=scanner]")
    user.get_by_role("button", name="Set password").click()
    new_password = page.locator("#new-password").input_value()
    assert new_password and new_password != password
    with (
        smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as client,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        client.login("scanner", password)
    page.get_by_role("button", name="Delete scanner").click()
    expect(page.get_by_text("Relay user scanner deleted")).to_be_visible()

    # The dashboard counts both messages for billing, as a chart, a table and the JSON.
    def dashboard_shows_two() -> bool:
        page.goto(live.url + "/admin/")
        figure = page.locator("article[data-connector=billing] [data-figure=sent-24h]")
        return figure.inner_text() == "2"

    wait_for(dashboard_shows_two, "the dashboard showed 2 sent for billing")
    billing_card = page.locator("article[data-connector=billing]")
    expect(billing_card.locator("svg.chart")).to_have_count(2)
    expect(billing_card.locator("svg.countdown")).to_have_attribute("aria-label", re.compile(r"days left"))
    billing_card.get_by_text("Last 24 hours as a table").click()
    expect(billing_card.locator("table.numbers").first).to_contain_text("2")
    check_page(page, "admin-overview-dashboard")
