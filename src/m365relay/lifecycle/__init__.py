"""Credential lifecycle: the expiry watch, zero-downtime rotation and the admin-consent link."""

from __future__ import annotations

from .consent import admin_consent_url, consent_redirect_uri, consent_state, read_consent_state
from .expiry_watch import ExpiryNotice, ExpiryWatch, threshold_for
from .rotation import Rotation, RotationResult, require_mail_send

__all__ = [
    "ExpiryNotice",
    "ExpiryWatch",
    "Rotation",
    "RotationResult",
    "admin_consent_url",
    "consent_redirect_uri",
    "consent_state",
    "read_consent_state",
    "require_mail_send",
    "threshold_for",
]
