"""The API's pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), with every asset served
from here: no CDN, so they work offline and under the app's Content-Security-Policy.

The assets come from the `fastapi-offline` package (a dependency in pyproject.toml);
Swagger UI starts from `web/docs/swagger-init.js`, since the policy allows no inline
script. ReDoc starts by itself from its `<redoc spec-url>` element.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)
ASSETS_URL = "/docs/assets"
ASSETS = StaticFiles(directory=Path(fastapi_offline.__file__).resolve().parent / "static")
# ReDoc styles itself with <style> elements it writes (styled-components) and runs
# its search in a worker made from a blob: scripts stay this origin's only.
REDOC_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="icon" type="image/png" href="{ASSETS_URL}/favicon.png">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """Swagger UI over /openapi.json."""
    return HTMLResponse(
        _page(
            "chat API (Swagger UI)",
            f'<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">\n',
            '<div id="swagger-ui"></div>\n'
            f'<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>\n'
            '<script src="/static/docs/swagger-init.js"></script>\n',
        )
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    """ReDoc over /openapi.json."""
    return HTMLResponse(
        _page(
            "chat API (ReDoc)",
            "",
            '<redoc spec-url="/openapi.json"></redoc>\n'
            f'<script src="{ASSETS_URL}/redoc.standalone.js"></script>\n',
        ),
        headers={"Content-Security-Policy": REDOC_CSP},
    )
