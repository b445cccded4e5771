"""`create_app()`: the FastAPI application and its lifespan; `create_server()`: what
uvicorn runs, the same app with `/ws` reached directly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from chat import __version__
from chat.api import (
    admin,
    admin_users,
    alerts,
    audit,
    auth,
    changes,
    console,
    docs,
    errors,
    files,
    message_changes,
    messages,
    notifications,
    ops,
    people,
    responses,
    rooms,
    search,
    stream,
    tasks,
    webhooks,
)
from chat.config import Settings
from chat.drain import install_drain_handlers
from chat.limits.body import BodyLimit
from chat.monitoring import history, multiprocess, redact
from chat.services import Services
from chat.ws.handshake import websocket_endpoint

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build an app for `settings` (read from the environment when omitted)."""
    settings = settings or Settings()
    redact.install()  # stream tickets travel in URLs: never in the access log

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        multiprocess.forget_dead_processes()  # a killed worker's connections are gone
        services = Services.build(settings)
        app.state.services = services
        app.state.ws = services.ws_deps()
        app.state.stream = services.stream_deps()
        await services.start()
        restore_signals = install_drain_handlers(services)
        log.info("chat server ready (database %s)", services.db.engine.url.render_as_string())
        try:
            yield
        finally:
            restore_signals()
            await services.stop()
            multiprocess.process_exited()

    # /docs and /redoc are ours (chat/api/docs.py): FastAPI's load their assets from a CDN.
    app = FastAPI(
        title="chat", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.add_exception_handler(RequestValidationError, errors.invalid_request)
    app.add_exception_handler(405, errors.method_not_allowed)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = responses.complete(FastAPI.openapi(app))
            app.openapi_schema = rooms.with_settings(document, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if response.status_code >= 400:  # the console's chart of errors and refusals
            history.HTTP_ERRORS[response.status_code] += 1
        # Some responses set their own: files a stricter one, /redoc one for its styles.
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # Outermost: oversized bodies are refused before anything reads them.
    app.add_middleware(
        BodyLimit,
        default=settings.max_request_bytes,
        larger={
            ("POST", "/api/tasks"): settings.max_upload_request_bytes,
            ("POST", "/api/files"): settings.max_upload_bytes + files.MULTIPART_SLACK,
        },
    )

    # notifications and changes before rooms: their `/api/rooms/{room}/...` routes must
    # not be read as a room named "x/notify" by a `/api/rooms/{room:path}` route.
    routers = (
        auth.router,
        people.router,
        notifications.router,
        changes.router,
        message_changes.router,
        messages.router,
        rooms.router,
        search.router,
        admin.router,
        admin_users.router,
        audit.router,
        console.router,
        tasks.router,
        files.router,
        stream.router,
        alerts.router,
        webhooks.router,
        ops.router,
        docs.router,
    )
    for router in routers:
        app.include_router(router)
    app.state.http_routes = errors.http_routes(routers)
    app.add_api_websocket_route("/ws", websocket_endpoint)
    app.mount("/static", StaticFiles(directory=ops.WEB_DIR), name="static")
    app.mount(docs.ASSETS_URL, docs.ASSETS, name="docs-assets")
    return app


class WebSocketFastPath:
    """ASGI: `/ws` sockets go straight to their endpoint, the rest to the FastAPI app.

    A WebSocket session lives as long as its socket; through FastAPI it would
    sit under a dozen middleware and routing frames (HTTP-only middleware all
    of them), each kept alive for every connection. Skipping them makes an idle
    socket smaller and a handshake cheaper.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = self.app
            await websocket_endpoint(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)


def create_server(settings: Settings | None = None) -> WebSocketFastPath:
    """What `chat serve` runs: `create_app()` behind the `/ws` fast path."""
    return WebSocketFastPath(create_app(settings))
