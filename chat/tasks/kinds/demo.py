"""`demo`: sleeps through N steps, reporting each (for trying the console and for tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from chat.protocol import UserRef
from chat.tasks.context import TaskContext, TaskDeps
from chat.tasks.registry import TaskParams, task_kind
from chat.tasks.status import TaskFailed, TaskRefused

DEMO_MAX_SECONDS = 3600.0


class DemoParams(TaskParams):
    model_config = ConfigDict(json_schema_extra={"description": "steps * delay: at most 3600 s"})

    steps: int = Field(10, ge=1, le=10_000, title="Steps", description="how many steps")
    delay: float = Field(0.5, ge=0, le=60, title="Delay", description="seconds per step")
    fail_at: float | None = Field(
        None,
        ge=0,
        le=1,
        title="Fail at",
        description="for testing: fail once progress reaches this fraction (0.6 = 60 %)",
    )

    @model_validator(mode="after")
    def _bounded(self) -> DemoParams:
        if self.steps * self.delay > DEMO_MAX_SECONDS:
            raise ValueError(f"steps * delay must be at most {DEMO_MAX_SECONDS:g} seconds")
        return self


async def _demo_allowed(deps: TaskDeps, user: UserRef, params: DemoParams) -> None:
    limit = deps.demo_max_seconds_user
    if user.role != "admin" and params.steps * params.delay > limit:
        raise TaskRefused(422, f"steps * delay must be at most {limit:g} seconds (non-admins)")


@task_kind("demo", DemoParams, check=_demo_allowed)
async def demo(ctx: TaskContext, params: DemoParams) -> dict[str, Any]:
    """Sleep through N steps of a delay each, reporting every step (for trying the console).

    `fail_at` is the test hook for failing tasks: the task fails with a readable
    error once its progress reaches that fraction (0 fails before the first step).
    """
    steps = params.steps
    if params.fail_at == 0:
        raise TaskFailed("demo failure requested at 0 % (before the first step)")
    for step in range(1, steps + 1):
        await asyncio.sleep(params.delay)
        await ctx.progress(step, steps, f"step {step} of {steps}")
        if params.fail_at is not None and step / steps >= params.fail_at:
            raise TaskFailed(
                f"demo failure requested at {params.fail_at:.0%} (step {step} of {steps})"
            )
    return {"steps": steps}
