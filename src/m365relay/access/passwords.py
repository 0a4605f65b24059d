"""Passwords of relay users and administrators: argon2id (RFC 9106) through argon2-cffi, and the rules a
new username or password must meet.

Only hashes are stored. Verifying an unknown user still costs one hash (``burn``), so response times do not
tell which usernames exist.
"""

from __future__ import annotations

import re
import secrets
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import ValidationError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a bound keeps one login's cost predictable
GENERATED_PASSWORD_BYTES = 18  # 144 bits → 24 URL-safe characters, safe to paste into shells and configs
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,254}$")


class Passwords:
    """Hash and verify passwords. Inject a cheaper ``PasswordHasher`` in tests; production uses the defaults
    of argon2-cffi (argon2id, 64 MiB, 3 passes, 4 lanes: RFC 9106's second recommended option)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(stored_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """The hash was made with weaker parameters than today's: re-hash it at the next successful login."""
        try:
            return bool(self.hasher.check_needs_rehash(stored_hash))
        except (InvalidHashError, ValueError):
            return True

    def burn(self, password: str) -> None:
        """Spend the time of one verification (unknown or disabled user), then fail."""
        self.verify(self._dummy_hash, password)

    @cached_property
    def _dummy_hash(self) -> str:
        return self.hasher.hash(secrets.token_urlsafe(16))


def generate_password() -> str:
    """24 URL-safe characters, starting and ending with a letter or digit (a leading "-" reads as an option
    on command lines, and a trailing one is easy to lose when copying)."""
    while True:
        password = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
        if password[0].isalnum() and password[-1].isalnum():
            return password


def check_password(password: str, field: str = "password") -> str:
    """A new password: long enough to resist guessing, and sendable in SMTP AUTH PLAIN (no NUL, RFC 4616)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            field,
            f"is {len(password)} characters long; use at least {MIN_PASSWORD_LENGTH}",
            remedy="Let m365relay generate one (leave the password out), or use a longer passphrase.",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(field, f"is longer than {MAX_PASSWORD_LENGTH} characters")
    if any(ch in password for ch in "\x00\r\n"):
        raise ValidationError(field, "must not contain NUL, CR or LF (they cannot be sent in SMTP AUTH)")
    if not password.strip():
        raise ValidationError(field, "must not be only spaces")
    return password


def check_username(username: str, field: str = "username") -> str:
    """Usernames are case-insensitive (stored in lower case): letters, digits and ``. _ @ + -``."""
    name = username.strip().lower()
    if not USERNAME_PATTERN.match(name):
        raise ValidationError(
            field,
            f"{username!r} is not a valid name: use 1-255 letters, digits and . _ @ + - (starting with a letter "
            "or digit)",
        )
    return name
