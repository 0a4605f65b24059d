"""M365RELAY_LOG_FORMAT=json, record by record: one line of JSON per event, the rendered message, the
message id taken from "message %s" templates or from ``extra``, tracebacks kept, and nothing copied from a
record beyond the documented fields (an ``extra={"password": …}`` somewhere must not reach the log).
tests/deploy/test_serve_process.py checks a real ``serve`` writing only such lines."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest

from m365relay.errors import ValidationError
from m365relay.logs import JsonFormatter
from m365relay.settings import load_settings


def render(msg: str, *args: object, **attributes: Any) -> dict[str, Any]:
    record = logging.makeLogRecord(
        {"name": "m365relay.test", "levelno": logging.INFO, "levelname": "INFO", "msg": msg, "args": args,
         **attributes}
    )  # fmt: skip
    line = JsonFormatter().format(record)
    assert "\n" not in line
    event: dict[str, Any] = json.loads(line)
    return event


def test_fields_and_rendered_message() -> None:
    event = render("queued message %s (%s) from %s", 42, "abc123", "app\nsecond line")
    assert event["message"] == "queued message 42 (abc123) from app\nsecond line"
    assert event["message_id"] == 42
    assert (event["level"], event["logger"]) == ("info", "m365relay.test")
    assert event["time"].endswith("+00:00")


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        ("unexpected error sending message %s", (7,), 7),
        ("%d%% done; message %d, connector %s", (50, 9, "default"), 9),
        ("message from %s refused: %s", ("app", "550"), None),  # "message from": no id in this one
        ("purged %d finished message(s)", (3,), None),
    ],
)
def test_message_id_from_the_template(template: str, args: tuple[object, ...], expected: int | None) -> None:
    assert render(template, *args).get("message_id") == expected


def test_explicit_fields_and_nothing_else() -> None:
    event = render("sent", message_id=5, connector="default", password="hunter2", token="eyJ0")
    assert event["message_id"] == 5 and event["connector"] == "default"
    assert "hunter2" not in json.dumps(event) and "eyJ0" not in json.dumps(event)


def test_exception_is_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        info = sys.exc_info()
    event = render("dispatcher task failed", exc_info=info)
    assert event["exception"].startswith("Traceback") and "ValueError: boom" in event["exception"]


def test_the_setting() -> None:
    assert load_settings(environ={"M365RELAY_LOG_FORMAT": "json"}).log_format == "json"
    assert load_settings(environ={}).log_format == "text"
    with pytest.raises(ValidationError, match="log_format"):
        load_settings(environ={"M365RELAY_LOG_FORMAT": "xml"})
