"""The admin UI in a real browser: Playwright drives Debian's Chromium (headless) against a live ``serve`` (HTTP +
dispatcher) and the sandbox, following the setup manual from sign-in to a test email in the sandbox's mailbox.

Screenshots of each main page go to test-artifacts/ (gitignored). The tests skip, saying why, only where
/usr/bin/chromium does not exist (``.ci/run`` installs it; locally: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_support import ADMIN_PASSWORD, ADMIN_USER, ARTIFACTS, LiveServer, admin_routes, create_admin
from playwright.sync_api import Browser, Page, expect, sync_playwright

from m365relay import Relay
from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.settings import Settings
from support import SandboxAdmin

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAGE = "/admin/connectors/smtp"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"browser tests drive Debian's Chromium at {CHROMIUM}, which is not installed "
        "(apt-get install -y chromium; .ci/run does this)",
    ),
]


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """The real clock here: the dispatcher sends mail while the browser watches."""
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def live(runtime: Runtime) -> Iterator[LiveServer]:
    create_admin(runtime)
    server = LiveServer(runtime, worker=True).start()
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


class Tab:
    """One browser tab on the live server, remembering every dialog that opened (there must be none)."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.dialogs: list[str] = []
        page.on("dialog", self._dialog)
        page.set_default_timeout(30_000)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def sign_in(self, path: str = "/admin/") -> None:
        self.go(path)
        expect(self.page).to_have_url(re.compile(r"/admin/login\?next="))
        self.page.get_by_label("Username").fill(ADMIN_USER)
        self.page.get_by_label("Password").fill(ADMIN_PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_text(f"Signed in as {ADMIN_USER}")).to_be_visible()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: Browser, live: LiveServer) -> Iterator[Tab]:
    # The sandbox's HTTPS certificate comes from its own test CA, which Chromium does not know.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    try:
        yield Tab(context.new_page(), live.url)
    finally:
        context.close()


def expiry() -> str:
    return (date.today() + timedelta(days=180)).isoformat()


def fill_connection(page: Page, sandbox: SandboxServer, demo: dict[str, Any]) -> None:
    """The connector page's fields for the sandbox tenant (Register Application's part)."""
    page.get_by_label("OAuth Client ID").fill(demo["client_id"])
    page.get_by_label("Tenant ID").fill(demo["tenant_id"])
    page.get_by_label("User Name").fill(demo["mailbox"])
    page.get_by_label("Cloud", exact=True).select_option("custom")
    page.get_by_label("Login URL").fill(sandbox.url)
    page.get_by_label("Graph URL").fill(sandbox.url)
    page.get_by_label("CA file").fill(str(sandbox.ca_file))


def test_follow_the_manual_from_sign_in_to_a_test_email(
    tab: Tab, live: LiveServer, runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    page, demo = tab.page, admin.demo
    # Before anything: an app registration with nothing consented yet (the manual's starting point).
    admin.grant()
    # Sign in (the connector page sends a stranger to the sign-in page and back).
    tab.go(PAGE)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    tab.shot("admin-login")
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="eMail (SMTP) connector")).to_be_visible()

    # Register Application: the page gives the exact Redirect URL; the admin registers it on the app.
    redirect = page.get_by_label("Redirect URL to register").input_value()
    assert redirect == live.url + "/admin/connectors/SMTP.aspx"
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#redirect-uri-status")).not_to_be_empty()
    admin.patch_app(redirect_uris=[redirect], requested_permissions=["Mail.Send", "Mail.ReadWrite"])
    fill_connection(page, sandbox, demo)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.", exact=True)).to_be_visible()
    expect(page.get_by_text("Next, Create Client Secret")).to_be_visible()

    # Create Client Secret: the Value into Public Key (secret), with the expiry date.
    page.get_by_label("Public Key (secret)").fill(demo["secret_value"])
    page.get_by_label("Secret expires").fill(expiry())
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.", exact=True)).to_be_visible()
    expect(page.locator("#stored-credential")).to_contain_text(f"expires on {expiry()} (180 days)")
    assert page.get_by_label("Public Key (secret)").input_value() == ""
    assert demo["secret_value"] not in page.content(), "never echoed, not even in the HTML source"
    tab.shot("admin-connector")

    # API Permissions: Grant admin consent → Microsoft's (the sandbox's) consent page → Accept → back here.
    page.get_by_role("button", name="Grant admin consent").click()
    expect(page.get_by_role("heading", name="Permissions requested")).to_be_visible()
    expect(page.get_by_role("listitem").filter(has_text="Mail.Send")).to_be_visible()
    page.get_by_role("button", name="Accept").click()
    expect(page).to_have_url(f"{live.url}{PAGE}#consent")
    expect(page.get_by_text("Admin consent granted", exact=True)).to_be_visible()
    expect(page.get_by_text("carries Mail.Send, Mail.ReadWrite")).to_be_visible()
    tab.shot("admin-consent-result")

    # Test connection: the manual's six checks green (the sixth sends a real message), and the seventh, the
    # optional read permission for in-doubt sends (Mail.ReadWrite includes it), not failed.
    page.get_by_label("Also send a test message to (optional)").fill("it@contoso.com")
    page.get_by_role("button", name="Test connection").click()
    checks = page.locator("li.check")
    expect(checks).to_have_count(7)
    statuses = [checks.nth(i).get_attribute("data-status") for i in range(7)]
    assert statuses[:6] == ["pass"] * 6 and statuses[6] != "fail", statuses
    tab.shot("admin-test-connection")

    # Send test email, and find it in the sandbox's mailbox with the request id the page shows.
    page.get_by_label("Send a test email to").fill("helpdesk@contoso.com")
    page.get_by_role("button", name="Send test email").click()
    expect(page.get_by_text("Test email sent to helpdesk@contoso.com")).to_be_visible()
    request_id = page.locator("#send code.rid").inner_text()
    captured = [m for m in admin.messages() if "helpdesk@contoso.com" in str(m)]
    assert len(captured) == 1 and captured[0]["request_id"] == request_id
    tab.shot("admin-send-test")

    # The outbox: one message sent by the dispatcher, one refused by Graph (with its remedy).
    relay = Relay(runtime=runtime)
    sent = relay.enqueue(to=["team@contoso.com"], subject="Nightly report", text="All good.")
    assert relay.wait(sent, timeout=60).status == "sent"
    admin.faults({"sendMail": {"count": 1, "status": 400, "code": "ErrorInvalidRecipients"}})
    failed = relay.enqueue(to=["typo@contoso.con"], subject="Invoice 42", text="Please pay.")
    assert relay.wait(failed, timeout=60).status == "failed"
    page.get_by_role("link", name="Outbox", exact=True).click()
    expect(page.get_by_role("link", name="Invoice 42")).to_be_visible()
    tab.shot("admin-outbox")
    page.get_by_role("link", name="Invoice 42").click()
    expect(page.get_by_role("heading", name="Last error")).to_be_visible()
    expect(page.get_by_text("At least one recipient address is not valid.")).to_be_visible()
    tab.shot("admin-message")
    page.get_by_role("button", name="Retry now").click()
    expect(page.get_by_text(f"Message {failed} queued again")).to_be_visible()

    # The audit log: the consent, the settings, the sign-in — no secret.
    page.get_by_role("link", name="Audit log").click()
    audit = page.locator("table.audit")
    for words in ("Admin consent", "Connector settings changed", "Signed in", "Test email", "Message retried"):
        expect(audit).to_contain_text(words)
    assert demo["secret_value"] not in page.content()
    tab.shot("admin-audit")
    assert tab.dialogs == []


def test_pasting_the_secret_id_says_so_next_to_the_field(tab: Tab, sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    tab.sign_in(PAGE)
    page = tab.page
    fill_connection(page, sandbox, admin.demo)
    page.get_by_label("Public Key (secret)").fill(admin.demo["secret_id"])
    page.get_by_label("Secret expires").fill(expiry())
    page.get_by_role("button", name="Save").click()
    error = page.locator("#secret-error")
    expect(error).to_contain_text("this looks like the Secret ID; paste the secret's Value")
    secret = page.get_by_label("Public Key (secret)")
    assert "secret-error" in (secret.get_attribute("aria-describedby") or "")
    expect(secret).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error-summary")).to_be_focused()
    assert page.get_by_label("OAuth Client ID").input_value() == admin.demo["client_id"], "typed values stay"
    assert admin.demo["secret_id"] not in page.content()
    tab.shot("admin-connector-secret-id")


def test_a_forged_csrf_token_is_refused(
    tab: Tab, runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    tab.sign_in(PAGE)
    page = tab.page
    fill_connection(page, sandbox, admin.demo)
    page.locator("#settings form input[name=csrf_token]").evaluate("input => { input.value = 'forged'; }")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Refused: the form's security token did not match")).to_be_visible()
    expect(page.get_by_text("so nothing was changed")).to_be_visible()
    assert runtime.connectors.find("default") is None


def test_a_script_typed_into_a_field_is_shown_as_text(tab: Tab, sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    tab.sign_in(PAGE)
    page = tab.page
    script = "<script>alert(1)</script>@contoso.com"
    fill_connection(page, sandbox, admin.demo)
    page.get_by_label("User Name").fill(script)
    page.get_by_label("Tenant ID").fill('"><img src=x onerror=alert(2)>')
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#user_name-error")).to_contain_text(script)
    assert page.get_by_label("User Name").input_value() == script
    assert page.locator("main script, main img").count() == 0
    page.wait_for_load_state("load")
    assert tab.dialogs == [], "no script ran"


def test_every_admin_address_sends_a_stranger_to_sign_in(tab: Tab, runtime: Runtime) -> None:
    for method, path in admin_routes(runtime):
        if method != "GET" or path == "/admin/login":
            continue
        tab.go(path)
        assert tab.page.url.startswith(f"{tab.base}/admin/login?next="), path
        expect(tab.page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_keyboard_only(tab: Tab) -> None:
    page = tab.page
    tab.go("/admin/login")
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(ADMIN_USER)
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_text(f"Signed in as {ADMIN_USER}")).to_be_visible()
    tab.go(PAGE)
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    outline = skip.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline not in ("none", ""), "the focused element is visibly outlined"
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


@pytest.mark.parametrize("path", ["/admin/", PAGE, "/admin/outbox", "/admin/audit"])
def test_a_narrow_screen_needs_no_sideways_scrolling(
    browser: Browser, live: LiveServer, runtime: Runtime, connector: ConnectorConfig, path: str
) -> None:
    Relay(runtime=runtime).enqueue(to=["someone.with.a.long.address@contoso.example.com"], subject="A" * 120, text="x")
    context = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True)
    try:
        tab = Tab(context.new_page(), live.url)
        tab.sign_in(path)
        width = tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width}px wide on a 375px screen"
        name = path.strip("/").replace("/", "-") or "overview"
        tab.shot(f"mobile-{name}")
    finally:
        context.close()
