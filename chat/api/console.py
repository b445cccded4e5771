"""What the admin console draws: the last hour's charts and the health of the parts.

`GET /api/admin/stats`: samples of every 10 s (`chat.monitoring.history`): messages
stored, open connections, ack latency p50/p99, errors and refusals by code; and
tasks finished per minute, from the database (whichever process ran them).
`GET /api/admin/health`: the `/readyz` probes with their latency, the processes
seen sampling lately (with Redis: every process of the site), and the task workers
seen through their tasks' heartbeats.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from chat.api.deps import Admin, HistoryDep, ReadinessDep, SettingsDep, TasksDep
from chat.api.responses import errors
from chat.monitoring.history import as_json
from chat.protocol import iso

router = APIRouter(prefix="/api/admin", tags=["admin"])
TASK_BUCKET = 60.0  # seconds per bar of the task throughput chart
ALIVE_AFTER = 3  # sample intervals: a process that sampled within them is alive


class SampleOut(BaseModel):
    ts: float
    messages: int
    connections: int
    ack_p50_ms: float | None
    ack_p99_ms: float | None
    acks: int
    errors: dict[str, int]


class TaskBucket(BaseModel):
    ts: float  # start of the minute (epoch seconds)
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class StatsOut(BaseModel):
    interval: float  # seconds per sample
    scope: Literal["process", "site"]  # site: every process's samples, merged through Redis
    processes: int
    now: float
    samples: list[SampleOut]
    tasks: list[TaskBucket]


class Check(BaseModel):
    status: Literal["ok", "unavailable"]
    latency_ms: float | None
    error: str | None = None


class ProcessOut(BaseModel):
    name: str
    last_seen: str
    alive: bool
    this: bool  # the process that answered


class TaskWorkerOut(BaseModel):
    name: str
    active_tasks: int
    last_heartbeat: str | None
    alive: bool


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    draining: bool
    broker: Literal["memory", "redis"]
    checks: dict[str, Check]
    processes: list[ProcessOut]
    task_workers: list[TaskWorkerOut]


@router.get("/stats", response_model=StatsOut, responses=errors((403, "admins only")))
async def stats(
    _: Admin,
    history: HistoryDep,
    tasks: TasksDep,
    settings: SettingsDep,
    minutes: Annotated[int, Query(ge=1, le=60)] = 60,
) -> StatsOut:
    """The last `minutes` of the charts, oldest first."""
    now = time.time()
    since = now - minutes * 60
    samples, processes = await history.site()
    buckets: dict[float, TaskBucket] = {}
    for finished_at, status in await tasks.repo.finished_since(since):
        start = finished_at - finished_at % TASK_BUCKET
        bucket = buckets.setdefault(start, TaskBucket(ts=start))
        if status in ("succeeded", "failed", "cancelled"):
            setattr(bucket, status, getattr(bucket, status) + 1)
    return StatsOut(
        interval=history.interval,
        scope="site" if settings.redis_url else "process",
        processes=len(processes),
        now=now,
        samples=[SampleOut.model_validate(s) for s in as_json(samples) if s["ts"] > since],
        tasks=[buckets[ts] for ts in sorted(buckets)],
    )


@router.get("/health", response_model=HealthOut, responses=errors((403, "admins only")))
async def health(
    _: Admin,
    readiness: ReadinessDep,
    history: HistoryDep,
    tasks: TasksDep,
    settings: SettingsDep,
) -> HealthOut:
    """The database and the broker, timed; the processes and task workers seen alive."""
    checks: dict[str, Check] = {}
    for name, probe in readiness.probes.items():
        started = time.perf_counter()
        try:
            await probe()
        except Exception as exc:  # report, never raise: this is the health view
            checks[name] = Check(status="unavailable", latency_ms=None, error=type(exc).__name__)
        else:
            latency = round((time.perf_counter() - started) * 1000, 2)
            checks[name] = Check(status="ok", latency_ms=latency)
    now = time.time()
    seen = (await history.site())[1]
    processes = [
        ProcessOut(
            name=name,
            last_seen=iso(at),
            alive=now - at < ALIVE_AFTER * history.interval + 1,
            this=name == history.node,
        )
        for name, at in sorted(seen.items())
    ]
    stale = settings.task_heartbeat_interval * 3
    workers = [
        TaskWorkerOut(
            name=name,
            active_tasks=count,
            last_heartbeat=iso(beat) if beat else None,
            alive=now - beat < stale,
        )
        for name, count, beat in await tasks.repo.workers()
    ]
    ok = all(c.status == "ok" for c in checks.values()) and not readiness.draining
    return HealthOut(
        status="ok" if ok else "degraded",
        draining=readiness.draining,
        broker="redis" if settings.redis_url else "memory",
        checks=checks,
        processes=processes,
        task_workers=workers,
    )
