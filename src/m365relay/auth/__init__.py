"""Access tokens for Microsoft Graph through MSAL's client-credentials flow."""

from __future__ import annotations

from .claims import token_claims, token_roles
from .tokens import AccessToken, TokenProvider

__all__ = ["AccessToken", "TokenProvider", "token_claims", "token_roles"]
