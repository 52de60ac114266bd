"""RFC 9457 problem documents of the export service."""

from __future__ import annotations

import json

from services.export.problems import PROBLEM_CONTENT_TYPE, problem_body, problem_response


def test_problem_body_has_the_rfc_9457_members() -> None:
    body = problem_body(503, "the database does not answer", instance="/healthz")

    assert body == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the database does not answer",
        "instance": "/healthz",
    }


def test_problem_body_leaves_out_empty_members_and_keeps_extensions() -> None:
    body = problem_body(404, limit=10)

    assert body == {"type": "about:blank", "title": "Not Found", "status": 404, "limit": 10}


def test_problem_response_is_problem_json_with_the_status() -> None:
    response = problem_response(405, "POST is not allowed", headers={"Allow": "GET"})

    assert response.status == 405
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert response.headers["Allow"] == "GET"
    assert response.text is not None
    assert json.loads(response.text)["detail"] == "POST is not allowed"
