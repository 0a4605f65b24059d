"""The served OpenAPI document, the offline reference page, and schemathesis against the live server: no
5xx, and every response conforms to the document (status codes, media types, headers, bodies)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
import schemathesis
from api_support import Api
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from m365relay.web.problems import PROBLEM_TYPES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_openapi_document_describes_the_api(api: Api) -> None:
    response = api.client(None).get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["servers"] == [{"url": "/api/v1"}]
    assert set(spec["paths"]) >= {
        "/messages",
        "/messages/{message_id}",
        "/messages/{message_id}/retry",
        "/messages/raw",
        "/connectors",
    }
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    post = spec["paths"]["/messages"]["post"]
    assert set(post["responses"]) >= {"202", "401", "403", "409", "413", "422", "429", "503"}
    for status, answer in post["responses"].items():
        if int(status) >= 400:
            assert list(answer["content"]) == ["application/problem+json"], status
    assert "message/rfc822" in spec["paths"]["/messages/raw"]["post"]["requestBody"]["content"]
    assert "/healthz" not in spec["paths"] and "/metrics" not in spec["paths"]


def test_reference_page_works_offline(api: Api) -> None:
    response = api.client(None).get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    for path in ("/messages/{message_id}/retry", "/messages/raw", "/connectors", "Idempotency-Key"):
        assert path in page
    assert "<script" not in page
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(https?:)""", page)
    assert external == [], "the page must load nothing from the network"
    assert 'href="/api/v1/openapi.json"' in page


def test_every_problem_type_is_documented() -> None:
    text = DOCS.read_text("utf-8")
    missing = [slug for slug in PROBLEM_TYPES if f"problems/{slug}" not in text]
    assert missing == []


def test_api_conforms_to_its_openapi_document(api: Api) -> None:
    """Every operation, hypothesis-generated requests (bounded), with an admin key."""
    schemathesis.serializer.alias("message/rfc822", "application/octet-stream")  # raw bytes, as they are
    schema = schemathesis.openapi.from_url(f"{api.base}/openapi.json")
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    with requests.Session() as session:
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def exercise(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=api.base, session=session, headers=headers, checks=checks)

            exercise()

    # Random data rarely makes a sendable message: walk the successful paths explicitly, with the same checks.
    op = {(o.method.upper(), o.path): o for o in operations}
    with requests.Session() as session:

        def call(method: str, path: str, **kw: Any) -> schemathesis.Response:
            case = op[(method, path)].Case(**kw)
            return case.call_and_validate(base_url=api.base, session=session, headers=headers, checks=checks)

        message = {"to": ["a@example.com"], "subject": "s", "text": "t", "html": "<b>h</b>", "importance": "low"}
        message_id = call("POST", "/messages", body=message, media_type="application/json").json()["id"]
        raw = b"To: b@example.com\r\nSubject: raw\r\n\r\nbody\r\n"
        assert call("POST", "/messages/raw", body=raw, media_type="message/rfc822").status_code == 202
        assert call("GET", "/messages/{message_id}", path_parameters={"message_id": message_id}).status_code == 200
        assert call("GET", "/messages", query={"limit": 1}).json()["next"] is not None
        assert call("DELETE", "/messages/{message_id}", path_parameters={"message_id": message_id}).status_code == 200
        retried = call("POST", "/messages/{message_id}/retry", path_parameters={"message_id": message_id})
        assert retried.json()["status"] == "queued"
        assert call("GET", "/connectors").json()["items"][0]["name"] == "default"
