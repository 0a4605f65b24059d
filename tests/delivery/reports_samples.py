"""Delivery reports written for the parser tests, from the structures in PROTOCOL.md §13 (not copied mail)."""

from __future__ import annotations

ORIGINAL_ID = "<reset-42@app.example.com>"
ORIGINAL_HEADERS = (
    "From: noreply@contoso.com\r\nTo: {rcpt}\r\nSubject: Reset your password\r\n"
    f"Message-ID: {ORIGINAL_ID}\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
)


def exchange(
    rcpt: str, status: str, diagnostic: str, *, action: str = "failed", subject: str = "Undeliverable"
) -> bytes:
    """An Exchange Online NDR: multipart/alternative, message/delivery-status, text/rfc822-headers."""
    return (
        "From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>\r\n"
        "To: <noreply@contoso.com>\r\n"
        "Date: Tue, 1 Dec 2026 10:00:05 +0000\r\n"
        f"Subject: {subject}: Reset your password\r\n"
        "Message-ID: <ndr-1@BN8PR04MB6243.namprd04.prod.outlook.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "X-MS-Exchange-Message-Is-Ndr: \r\n\r\n"
        "--b1\r\n"
        'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        "--b2\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Your message to {rcpt} couldn't be delivered.\r\n\r\n--b2\r\n"
        "Content-Type: text/html; charset=us-ascii\r\n\r\n<p>Your message couldn't be delivered.</p>\r\n--b2--\r\n\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns;BN8PR04MB6243.namprd04.prod.outlook.com\r\n"
        "Received-From-MTA: dns;BN8PR04MB6000.namprd04.prod.outlook.com\r\n"
        "Arrival-Date: Tue, 1 Dec 2026 10:00:01 +0000\r\n\r\n"
        f"Original-Recipient: rfc822;{rcpt}\r\nFinal-Recipient: rfc822;{rcpt}\r\nAction: {action}\r\n"
        f"Status: {status}\r\nDiagnostic-Code: smtp;{diagnostic}\r\nX-Display-Name: Someone\r\n\r\n"
        "--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" + ORIGINAL_HEADERS.format(rcpt=rcpt) + "\r\n--b1--\r\n"
    ).encode()


RECIPIENT_NOT_FOUND = exchange(
    "nobody@contoso.com",
    "5.1.10",
    "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
)
MAILBOX_FULL = exchange(
    "full@fabrikam.com", "5.2.2", "552 5.2.2 STOREDRV.Deliver; recipient mailbox is full, message cannot be delivered"
)
DBEB = exchange("gone@fabrikam.com", "5.4.1", "550 5.4.1 Recipient address rejected: Access denied. [DBEB]")
DELAYED = exchange(
    "slow@fabrikam.com", "4.4.7", "400 4.4.7 Message delayed", action="delayed", subject="Delivery delayed"
)
EXPIRED = exchange("slow@fabrikam.com", "4.4.7", "550 4.4.7 QUEUE.Expired; message expired")
SENDER_RESTRICTED = exchange(
    "someone@fabrikam.com",
    "5.7.708",
    "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
)
DISABLED = exchange("left@fabrikam.com", "5.2.1", "550 5.2.1 STOREDRV.Deliver; mailbox disabled")

POSTFIX = (
    "From: MAILER-DAEMON@mx.fabrikam.com (Mail Delivery System)\r\n"
    "To: noreply@contoso.com\r\nDate: Tue, 1 Dec 2026 11:00:00 +0100\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="pf"\r\n\r\n'
    "--pf\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n\r\n"
    "--pf\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; mx.fabrikam.com\r\nX-Postfix-Queue-ID: 4F1A2B3C\r\n"
    "Arrival-Date: Tue,  1 Dec 2026 10:59:58 +0100 (CET)\r\n\r\n"
    "Final-Recipient: rfc822; typo@fabrikam.com\r\nOriginal-Recipient: rfc822;Typo@Fabrikam.com\r\n"
    "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mail.fabrikam.com\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <typo@fabrikam.com>: Recipient address\r\n    rejected: User unknown\r\n\r\n"
    "--pf\r\nContent-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\r\n"
    + ORIGINAL_HEADERS.format(rcpt="typo@fabrikam.com")
    + "\r\nHello\r\n\r\n--pf--\r\n"
).encode()

FREE_TEXT = (
    "From: postmaster@old.example.net\r\nTo: noreply@contoso.com\r\nDate: Tue, 1 Dec 2026 12:00:00 +0000\r\n"
    "Subject: failure notice\r\n\r\n"
    "Hi. This is the qmail-send program at old.example.net.\r\n"
    "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
    "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
    "<ghost@old.example.net>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
    "--- Below this line is a copy of the message.\r\n\r\n" + ORIGINAL_HEADERS.format(rcpt="ghost@old.example.net")
).encode()

FREE_TEXT_STRANGER = (
    b"From: MAILER-DAEMON@elsewhere.example\r\nTo: noreply@contoso.com\r\nSubject: Mail delivery failed\r\n"
    b"Date: Tue, 1 Dec 2026 12:00:00 +0000\r\n\r\nA message that you sent could not be delivered.\r\n"
    b"  someone@elsewhere.example\r\n    mailbox unavailable\r\n"
)

OUT_OF_OFFICE = (
    "From: Ann <ann@fabrikam.com>\r\nTo: noreply@contoso.com\r\nSubject: Automatic reply: Reset your password\r\n"
    "Date: Tue, 1 Dec 2026 10:00:09 +0000\r\nAuto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n"
    f"In-Reply-To: {ORIGINAL_ID}\r\nContent-Type: text/plain\r\n\r\n"
    "I am out of the office until Monday. Your message to ann@fabrikam.com will be read then.\r\n"
).encode()

READ_RECEIPT = (
    "From: ann@fabrikam.com\r\nTo: noreply@contoso.com\r\nSubject: Read: Reset your password\r\n"
    "Date: Tue, 1 Dec 2026 10:30:00 +0000\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=disposition-notification; boundary="r"\r\n\r\n'
    "--r\r\nContent-Type: text/plain\r\n\r\nYour message was read.\r\n"
    "--r\r\nContent-Type: message/disposition-notification\r\n\r\n"
    f"Final-Recipient: rfc822;ann@fabrikam.com\r\nOriginal-Message-ID: {ORIGINAL_ID}\r\n"
    "Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--r--\r\n"
).encode()

NEWSLETTER = (
    b"From: news@shop.example\r\nTo: noreply@contoso.com\r\nSubject: Our December offers\r\n"
    b"Date: Tue, 1 Dec 2026 09:00:00 +0000\r\n\r\nBuy now; contact sales@shop.example.\r\n"
)
