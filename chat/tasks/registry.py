"""The kinds table: `@task_kind` registers a kind; `resolve` validates a start request.

A kind is an async function registered with `@task_kind(name, Params)`. It gets a
`TaskContext` and its validated parameters, and returns a JSON-able result (or raises
`TaskFailed` with a readable reason). An optional `check` refuses a start before
anything is stored (`TaskRefused`), with the same narrow `TaskDeps` the kind gets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from chat.protocol import UserRef
from chat.tasks.context import TaskContext, TaskDeps
from chat.tasks.status import TaskRefused

P = TypeVar("P", bound=BaseModel)

Run = Callable[[TaskContext, P], Awaitable[dict[str, Any] | None]]
Check = Callable[[TaskDeps, UserRef, P], Awaitable[None]]
Stored = Callable[[P], dict[str, Any]]


class TaskParams(BaseModel):
    """Base of every kind's parameters: unknown fields are refused, and each value must
    have its schema's JSON type (no `"5"` for 5, no 5 for `"5"`), so the OpenAPI
    document's variant of the kind (`chat.api.tasks`) says what is accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any) -> Any:
        # JSON Schema's integer is a number without a fraction: 5.0 is one, as 5 is.
        return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True, slots=True)
class TaskKind(Generic[P]):
    """A registered kind: how to validate, authorize, store and run it."""

    name: str
    params: type[P]
    run: Run[P]
    admin_only: bool = False
    check: Check[P] | None = None
    stored: Stored[P] | None = None  # what of the params goes in the row (secrets left out)
    upload_field: str | None = None  # a multipart file upload fills this parameter
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "admin_only": self.admin_only,
            "description": self.description,
            "upload_field": self.upload_field,
            "params": self.params.model_json_schema(),
        }

    def stored_params(self, params: P) -> dict[str, Any]:
        """The parameters as the task row keeps them."""
        return self.stored(params) if self.stored else params.model_dump(mode="json")


REGISTRY: dict[str, TaskKind[Any]] = {}


def task_kind(
    name: str,
    params: type[P],
    *,
    admin_only: bool = False,
    check: Check[P] | None = None,
    stored: Stored[P] | None = None,
    upload_field: str | None = None,
) -> Callable[[Run[P]], Run[P]]:
    """Register an async function as the task kind `name` (its docstring describes it)."""

    def register(fn: Run[P]) -> Run[P]:
        if name in REGISTRY:
            raise ValueError(f"task kind {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().split("\n\n", 1)[0].replace("`", "")
        REGISTRY[name] = TaskKind(
            name, params, fn, admin_only, check, stored, upload_field, " ".join(doc.split())
        )
        return fn

    return register


def resolve(kind_name: str, raw_params: Any, user: UserRef) -> tuple[TaskKind[Any], BaseModel]:
    """The kind `user` asks for and its validated parameters.

    Raises `TaskRefused` (422 unknown kind or bad params, 403 admin-only kind).
    """
    kind = REGISTRY.get(kind_name)
    if kind is None:
        known = ", ".join(sorted(REGISTRY))
        raise TaskRefused(422, f"unknown task kind {kind_name[:40]!r}; known kinds: {known}")
    if kind.admin_only and user.role != "admin":
        raise TaskRefused(403, f"only admins may start {kind.name!r} tasks")
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, dict):
        raise TaskRefused(422, "params must be a JSON object")
    try:
        params = kind.params.model_validate(raw_params)
    except ValidationError as exc:
        raise TaskRefused(422, validation_detail(exc)) from None
    return kind, params


def validation_detail(exc: ValidationError, prefix: str = "params") -> list[dict[str, Any]]:
    """pydantic errors as FastAPI-style 422 details, located under `prefix`."""
    return [
        {"loc": [prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
