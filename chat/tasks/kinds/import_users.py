"""`import_users` (admins): creates accounts from CSV rows, reporting errors per row."""

from __future__ import annotations

import csv
import io
from typing import Any

from pydantic import Field, field_validator

from chat.storage.rules import Conflict, InputError
from chat.tasks.context import TaskContext
from chat.tasks.registry import TaskParams, task_kind

IMPORT_MAX_BYTES = 2_000_000
IMPORT_MAX_ROWS = 10_000
IMPORT_MAX_ERRORS = 1000
IMPORT_ROLES = ("user", "admin")


class ImportParams(TaskParams):
    csv: str = Field(
        max_length=IMPORT_MAX_BYTES,
        title="Users (CSV)",
        description="CSV text: username,password[,role] per line; a header line is optional",
        json_schema_extra={"pattern": r"\S"},  # not empty (the validator below)
    )

    @field_validator("csv")
    @classmethod
    def _rows_bounded(cls, value: str) -> str:
        lines = value.count("\n") + 1
        if lines > IMPORT_MAX_ROWS + 1:
            raise ValueError(f"at most {IMPORT_MAX_ROWS} rows per import")
        if not value.strip():
            raise ValueError("the CSV is empty")
        return value


def _import_summary(params: ImportParams) -> dict[str, Any]:
    # The CSV holds passwords: the stored row keeps only its size.
    return {"csv": f"<{len(params.csv)} characters, {len(_rows(params.csv))} rows: not stored>"}


def _rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank row, without a `username,...` header."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    rows = [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    if rows and rows[0][1] and rows[0][1][0].strip().casefold() == "username":
        rows = rows[1:]
    return rows


@task_kind(
    "import_users", ImportParams, admin_only=True, stored=_import_summary, upload_field="csv"
)
async def import_users(ctx: TaskContext, params: ImportParams) -> dict[str, Any]:
    """Create accounts from CSV rows `username,password[,role]`, reporting errors per row.

    Rows that fail (bad name, short password, unknown role, name taken) are listed
    in the result with their line number; the others are created. Passwords are
    hashed one at a time so sign-ins keep their share of the hashing slots.
    """
    rows = _rows(params.csv)
    total = len(rows)
    created: list[str] = []
    errors: list[dict[str, Any]] = []
    failed = 0
    accounts = ctx.deps.accounts
    for index, (line, cells) in enumerate(rows, 1):
        cells = [c.strip() for c in cells]
        username = cells[0] if cells else ""
        problem: str | None = None
        if len(cells) < 2 or len(cells) > 3:
            problem = "expected username,password[,role]"
        else:
            role = (cells[2] if len(cells) == 3 and cells[2] else "user").casefold()
            if role not in IMPORT_ROLES:
                problem = f"role must be one of {', '.join(IMPORT_ROLES)}"
            else:
                try:
                    user = await accounts.register(username, cells[1], role)
                    created.append(user.username)
                except (InputError, Conflict) as exc:
                    problem = str(exc)
        if problem is not None:
            failed += 1
            if len(errors) < IMPORT_MAX_ERRORS:
                errors.append({"line": line, "username": username[:64], "error": problem})
        await ctx.progress(index, total, f"{index} of {total} rows ({failed} failed)")
    return {
        "total": total,
        "created": len(created),
        "failed": failed,
        "errors": errors,
        "errors_truncated": failed > len(errors),
    }
