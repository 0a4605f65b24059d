"""Logging for the long-running commands (serve, worker, demo): one format, and the chatty libraries kept to
warnings unless ``log_level = "debug"`` — httpx would otherwise log a line per Graph request. Nothing here
ever logs a secret: tokens travel in headers, which httpx does not log, and AUTH lines are filtered by the
SMTP relay (ingress/smtp_logging.py).

``log_format = "json"`` writes one JSON object per line (for Loki, Elasticsearch, CloudWatch, journald's
``_TRANSPORT=stdout``): ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` — the rendered text, exactly
what the text format shows — then ``message_id`` when the event is about one queued message, a few other
known fields, and ``exception`` with the traceback. Only the fields named in ``FIELDS`` are ever copied
from a record, so an ``extra=`` added somewhere later cannot leak a value nobody reviewed.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from .settings import Settings

QUIET_LIBRARIES = ("httpx", "httpcore", "msal", "urllib3", "alembic.runtime.migration")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Record attributes (set with ``extra=``) that the JSON format copies; anything else stays out.
FIELDS = ("message_id", "connector", "client", "http_url", "smtp_host", "smtp_port")
# The relay's log lines name a queued message as "message %s" / "message %d" (its outbox id); the argument
# in that position is the message id when no explicit ``extra={"message_id": …}`` was given.
_MESSAGE_PLACEHOLDER = re.compile(r"\bmessage %[sdr]")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrifxXeEgGc]")


def configure(settings: Settings) -> None:
    level = settings.log_level.upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    if settings.log_level != "debug":
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped by JSON itself)."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        message_id = getattr(record, "message_id", None)
        if message_id is None:
            message_id = message_id_argument(record)
        if message_id is not None:
            event["message_id"] = message_id
        for name in FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exception"] = record.exc_text
        return json.dumps(event, ensure_ascii=False, default=str)


def message_id_argument(record: logging.LogRecord) -> int | str | None:
    """The argument formatted by the first ``message %s`` of the record's template, if there is one."""
    template, args = record.msg, record.args
    if not isinstance(template, str) or not isinstance(args, tuple) or not args:
        return None
    found = _MESSAGE_PLACEHOLDER.search(template)
    if found is None:
        return None
    index = len(_PLACEHOLDER.findall(template[: found.start()].replace("%%", "")))
    if index >= len(args):
        return None
    value = args[index]
    return value if isinstance(value, int | str) else str(value)
