"""Encryption at rest for client secrets and private keys (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from ``M365RELAY_SECRET_KEY`` or, failing that, from ``home/secret.key``, which is created
on first use with mode 0600. Lose the key and the stored secrets must be entered again; nothing else is
affected. Several hosts sharing one PostgreSQL database must share the key (set the variable).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..errors import M365RelayError


class Secret:
    """A string that does not show itself: ``repr``/``str`` print asterisks; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretKeyError(M365RelayError):
    default_remedy = (
        "Stored secrets could not be decrypted with the current key. Restore the original "
        "M365RELAY_SECRET_KEY (or home/secret.key), or enter the connector's secret again."
    )


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise SecretKeyError(
                "M365RELAY_SECRET_KEY is not a valid key (32 bytes, urlsafe base64)",
                remedy="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'",
            ) from exc

    @classmethod
    def from_settings(cls, secret_key: str | None, home: Path) -> SecretBox:
        if secret_key:
            return cls(secret_key.encode())
        return cls(_key_file(home / "secret.key"))

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> Secret:
        try:
            return Secret(self._fernet.decrypt(ciphertext).decode())
        except InvalidToken as exc:
            raise SecretKeyError("a stored secret could not be decrypted (wrong key)") from exc


def _key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # Write a private temporary file, then link it into place: if two processes race, exactly one
    # key wins and neither ever reads a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        tmp.unlink()
    return key
