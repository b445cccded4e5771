"""Health, readiness, metrics and the static pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse, JSONResponse

from chat.api.deps import ReadinessDep
from chat.monitoring import multiprocess

router = APIRouter(tags=["operations"])
WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "a dependency does not answer, or the server is draining"}},
)
async def readyz(readiness: ReadinessDep) -> JSONResponse:
    """The database and the broker answer (503 naming what does not)."""
    checks: dict[str, str] = {}
    for name, probe in readiness.probes.items():
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:  # report, never raise: this is the health check
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values()) and not readiness.draining
    return JSONResponse(
        {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "draining": readiness.draining,
        },
        status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text format: the sum over every worker of `chat serve --workers N`."""
    return Response(multiprocess.render(), media_type=multiprocess.CONTENT_TYPE)


@router.get("/", include_in_schema=False)
async def chat_page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html")


@router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    return FileResponse(WEB_DIR / "admin.html")
