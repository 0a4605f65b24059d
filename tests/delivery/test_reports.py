"""The report parser on reports written from PROTOCOL.md §13, and on every multipart/report of the real corpus."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import reports_samples as s

from m365relay.mailbox import reports
from m365relay.mailbox.reports import BOUNCE, COMPLAINT, DELAYED, FREE_TEXT, READ_RECEIPT, UNRELATED
from m365relay.suppression import is_hard


@pytest.mark.parametrize(
    ("raw", "address", "status", "hard"),
    [
        (s.RECIPIENT_NOT_FOUND, "nobody@contoso.com", "5.1.10", True),
        (s.MAILBOX_FULL, "full@fabrikam.com", "5.2.2", False),
        (s.DBEB, "gone@fabrikam.com", "5.4.1", True),
        (s.DISABLED, "left@fabrikam.com", "5.2.1", True),
        (s.EXPIRED, "slow@fabrikam.com", "4.4.7", False),
        (s.SENDER_RESTRICTED, "someone@fabrikam.com", "5.7.708", False),
    ],
)
def test_exchange_online_ndrs(raw: bytes, address: str, status: str, hard: bool) -> None:
    report = reports.classify(raw)
    assert report.kind == BOUNCE and report.source == "exchange" and report.counts
    assert report.original_message_id == s.ORIGINAL_ID
    [recipient] = report.recipients
    assert (recipient.address, recipient.original, recipient.action, recipient.status) == (
        address,
        address,
        "failed",
        status,
    )
    assert (
        recipient.diagnostic is not None
        and recipient.diagnostic.startswith(("550", "552"))
        and status in recipient.diagnostic
    )
    assert report.reported_at == datetime(2026, 12, 1, 10, 0, 5, tzinfo=UTC)
    assert is_hard(recipient.status) is hard  # 5.7.708 is the sender's tenant: never a reason to suppress


def test_delivery_delayed_notice() -> None:
    report = reports.classify(s.DELAYED)
    assert report.kind == DELAYED and report.counts
    assert [(r.address, r.action, r.status) for r in report.recipients] == [("slow@fabrikam.com", "delayed", "4.4.7")]


def test_remote_postfix_dsn_with_the_whole_original() -> None:
    report = reports.classify(s.POSTFIX)
    assert (report.kind, report.source, report.original_message_id) == (BOUNCE, "remote", s.ORIGINAL_ID)
    [recipient] = report.recipients
    assert recipient.address == "typo@fabrikam.com" and recipient.original == "typo@fabrikam.com"
    assert recipient.status == "5.1.1"
    assert recipient.diagnostic == "550 5.1.1 <typo@fabrikam.com>: Recipient address rejected: User unknown"
    assert report.reported_at == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_free_text_bounce_names_the_recipient_and_the_original() -> None:
    report = reports.classify(s.FREE_TEXT)
    assert report.kind == FREE_TEXT and report.original_message_id == s.ORIGINAL_ID
    assert [(r.address, r.status) for r in report.recipients] == [("ghost@old.example.net", "5.1.1")]
    # It counts only against what the relay sent: the Message-ID or a recipient must match.
    assert report.names({s.ORIGINAL_ID.lower()}, set())
    assert report.names(set(), {"ghost@old.example.net"})
    assert not report.names({"<other@x>"}, {"someone@else.example"})


def test_free_text_bounce_about_something_else_matches_nothing() -> None:
    report = reports.classify(s.FREE_TEXT_STRANGER)
    assert report.kind == FREE_TEXT and report.original_message_id is None
    assert not report.names({s.ORIGINAL_ID.lower()}, {"nobody@contoso.com"})


@pytest.mark.parametrize(
    ("raw", "kind"),
    [(s.OUT_OF_OFFICE, reports.AUTO_REPLY), (s.READ_RECEIPT, READ_RECEIPT), (s.NEWSLETTER, UNRELATED)],
)
def test_what_is_not_a_bounce(raw: bytes, kind: str) -> None:
    report = reports.classify(raw)
    assert report.kind == kind and not report.counts and report.recipients == ()


def test_garbage_is_unrelated() -> None:
    assert reports.classify(b"\x00\xff not mail at all").kind == UNRELATED


# -- the real corpus: every multipart/report message, read in place -------------------------------------

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "real"
# What each file is (checked by reading it): kind, and for bounces the first recipient and its status.
EXPECTED: dict[str, tuple[str, str | None, str | None]] = {
    "cpython/msg_05.txt": (UNRELATED, None, None),  # "Yadda yadda": a report with no delivery-status part
    "cpython/msg_25.txt": (BOUNCE, "scoffman@wellpartner.com", "5.4.6"),  # its boundary parameter is cut short
    "cpython/msg_43.txt": (BOUNCE, "xxxxxxx@dot.ca.gov", "5.7.1"),
    "flanker/bounce__mailbox-full.eml": (BOUNCE, "user@aol.com", "5.2.2"),
    "flanker/bounce__no-mx.eml": (DELAYED, "user@example.com", "4.4.4"),
    "flanker/bounce__office365.eml": (BOUNCE, "noname@example.com", "5.1.10"),
    "flanker/bounce__zed.eml": (BOUNCE, "asdfasdfasdfasdfasdfasdfewrqertrtyrthsfgdfgadfqeadvxzvz@gmail.com", "5.1.1"),
    "flanker/complaints__aol.eml": (COMPLAINT, None, None),
    "flanker/complaints__yahoo.eml": (COMPLAINT, None, None),
    "flanker/disposition-notification.eml": (READ_RECEIPT, None, None),
    "james/server__protocols__jmap-rfc-8621-integration-tests__jmap-rfc-8621-integration-tests-common__src__main__"
    "resources__eml__mdn_simple.eml": (READ_RECEIPT, None, None),
    "mikel/multipart_report_emails__report_422.eml": (DELAYED, "fraser@oooooooo.com.au", "4.2.2"),
    "mikel/multipart_report_emails__report_530.eml": (BOUNCE, "edwin@zzzzzzz.com", "5.3.0"),
    "mimekit/messages__bounce.txt": (BOUNCE, "netec.test@netecgc.com", "5.1.1"),  # per-recipient part in base64
    "mimekit/messages__delivery-status-multiple-blank-lines.txt": (BOUNCE, "orig_recip@customer.com", "5.5.0"),
    "mimekit/messages__disposition-notification.anonymized.eml": (READ_RECEIPT, None, None),
    "mimekit/messages__disposition-notification.txt": (READ_RECEIPT, None, None),
    "nodemailer/delivery-status.eml": (BOUNCE, "xxxx@xxxx.com", "5.1.1"),
    "phpmime/failure.eml": (UNRELATED, None, None),  # cut off inside the human-readable part: nothing to match
    "spamscope/mail_malformed_2": (BOUNCE, "abh@netpar.com.br", "4.2.2"),
}


def _reports_in_corpus() -> list[str]:
    if not CORPUS.is_dir():
        return []
    found = subprocess.run(
        ["grep", "-rli", "multipart/report", str(CORPUS)], capture_output=True, text=True, check=False
    ).stdout.split()
    return sorted(str(Path(f).resolve().relative_to(CORPUS.resolve())) for f in found)


def test_every_corpus_report_is_expected() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    assert _reports_in_corpus() == sorted(f for f in EXPECTED if (CORPUS / f).exists())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_report(name: str) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    kind, address, status = EXPECTED[name]
    report = reports.classify(path.read_bytes())
    assert report.kind == kind
    if address is not None:
        assert (report.recipients[0].address, report.recipients[0].status) == (address, status)
