"""Connectors: the eMail (SMTP) connector screen's fields, validated, stored, with encrypted credentials."""

from __future__ import annotations

from .model import ConnectorConfig, Credential
from .secretbox import Secret, SecretBox
from .store import DEFAULT_NAME, ConnectorStore, ConnectorUpdate

__all__ = [
    "DEFAULT_NAME",
    "ConnectorConfig",
    "ConnectorStore",
    "ConnectorUpdate",
    "Credential",
    "Secret",
    "SecretBox",
]
