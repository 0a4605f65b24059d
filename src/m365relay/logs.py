"""Logging for the long-running commands (serve, worker, demo): one format, and the chatty libraries kept to
warnings unless ``log_level = "debug"`` — httpx would otherwise log a line per Graph request. Nothing here
ever logs a secret: tokens travel in headers, which httpx does not log, and AUTH lines are filtered by the
SMTP relay (ingress/smtp_logging.py)."""

from __future__ import annotations

import logging

from .settings import Settings

QUIET_LIBRARIES = ("httpx", "httpcore", "msal", "urllib3", "alembic.runtime.migration")


def configure(settings: Settings) -> None:
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "debug":
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
