"""The OpenAPI 3.1 document of the export API (openapi.yaml beside this file), served at
/openapi.json. The document is written by hand; tests check it against the routes the
app mounts and against what each route answers (schemathesis fuzzes from it)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

OPENAPI_PATH = "/openapi.json"
DOCUMENT = Path(__file__).with_name("openapi.yaml")


@cache
def openapi_document() -> dict[str, Any]:
    """The document, parsed once."""
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@cache
def _document_bytes() -> bytes:
    return json.dumps(openapi_document(), ensure_ascii=False).encode()


async def _serve(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=_document_bytes(), content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )  # fmt: skip


def add_openapi_route(app: web.Application) -> None:
    """Mount GET /openapi.json (an open path)."""
    app.router.add_get(OPENAPI_PATH, _serve)
