"""The Microsoft Graph application permissions (app roles) the sandbox knows — the one list to extend.

Graph checks the `roles` claim of an app-only token; each endpoint names the roles that let a call
through (PROTOCOL.md §5, §12). Least to most for mail reading: Mail.ReadBasic.All (every property but
`body`, `bodyPreview`, `uniqueBody` and attachments), Mail.Read (everything), Mail.ReadWrite (also
create, update, delete: drafts and upload sessions). The consent page shows the descriptions.
"""

from __future__ import annotations

MAIL_SEND = "Mail.Send"
MAIL_READBASIC_ALL = "Mail.ReadBasic.All"
MAIL_READBASIC = "Mail.ReadBasic"  # the same as .All for app-only tokens [doc: permissions reference]
MAIL_READ = "Mail.Read"
MAIL_READWRITE = "Mail.ReadWrite"
USER_READ_ALL = "User.Read.All"
USER_READBASIC_ALL = "User.ReadBasic.All"
DIRECTORY_READ_ALL = "Directory.Read.All"

# Roles that may read message metadata (find a message by internetMessageId, read a draft).
READ_ANY: frozenset[str] = frozenset({MAIL_READBASIC_ALL, MAIL_READBASIC, MAIL_READ, MAIL_READWRITE})
# Roles that may read bodies and the MIME (`…/$value`), e.g. to parse a non-delivery report.
READ_FULL: frozenset[str] = frozenset({MAIL_READ, MAIL_READWRITE})
# Roles that may list the tenant's users (`GET /users`).
LIST_USERS: frozenset[str] = frozenset({USER_READ_ALL, USER_READBASIC_ALL, DIRECTORY_READ_ALL})

DESCRIPTIONS: dict[str, str] = {
    MAIL_SEND: "Send mail as any user",
    MAIL_READBASIC_ALL: "Read basic mail in all mailboxes (no bodies, no attachments)",
    MAIL_READBASIC: "Read basic mail in all mailboxes (no bodies, no attachments)",
    MAIL_READ: "Read mail in all mailboxes",
    MAIL_READWRITE: "Read and write mail in all mailboxes",
    USER_READ_ALL: "Read all users' full profiles",
    USER_READBASIC_ALL: "Read all users' basic profiles",
    DIRECTORY_READ_ALL: "Read directory data",
}

# Properties Mail.ReadBasic.All does not cover [doc: permissions reference, Mail.ReadBasic.All].
BODY_PROPERTIES: frozenset[str] = frozenset({"body", "bodypreview", "uniquebody", "attachments"})


def describe(role: str) -> str:
    return DESCRIPTIONS.get(role, "")
