"""Request fields whose rule is a function of `chat.storage.rules` (or the accounts'):
the model runs the rule (its `InputError` is the 422's `detail`, in its own words) and
the OpenAPI document states the same rule in JSON Schema words."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from chat.auth.accounts import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, check_password
from chat.storage import rules


class RequestBody(BaseModel):
    """A JSON request body taken as its schema says: no coercion (`"1"` is no integer,
    `0` no boolean), so what the OpenAPI document refuses, the server refuses."""

    model_config = ConfigDict(strict=True)


def _whole(value: object) -> object:
    # JSON Schema's integer is a number without a fraction: 5.0 is one, as 5 is.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = BeforeValidator(_whole)
"""For the int fields of a `RequestBody` (strict): `5.0` is the integer 5."""


def _iso(value: object) -> object:
    # pydantic also reads a number as seconds since 1970; the document says ISO 8601.
    if isinstance(value, str) and not re.match(r"\d{4}-", value):
        raise ValueError("an ISO 8601 date and time, like 2026-11-30T12:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso)]
"""A date and time as the document says (`format: date-time`), never a bare number."""


Username = Annotated[
    str,
    Field(
        max_length=64,
        json_schema_extra={
            "pattern": rules.USERNAME_PATTERN,
            "minLength": rules.USERNAME_MIN,
            "maxLength": rules.USERNAME_MAX,
        },
    ),
    AfterValidator(rules.check_username),
]
"""A new account's name: 3 to 32 ASCII letters, digits, `_`, `.`, `-`."""

Password = Annotated[
    str,
    Field(
        max_length=1024,
        json_schema_extra={"minLength": MIN_PASSWORD_CHARS, "maxLength": MAX_PASSWORD_CHARS},
    ),
    AfterValidator(check_password),
]
"""A new password: 8 to 256 characters."""

DisplayName = Annotated[
    str,
    Field(max_length=1000, json_schema_extra={"pattern": rules.DISPLAY_NAME_PATTERN}),
    AfterValidator(rules.normalize_display_name),
]
"""1 to 64 printable characters, trimmed (and NFC-normalized)."""

Topic = Annotated[
    str,
    Field(max_length=4000, json_schema_extra={"pattern": rules.TOPIC_PATTERN}),
    AfterValidator(rules.normalize_topic),
]
"""At most 500 printable characters on one line, trimmed; empty clears the topic."""

RoomName = Annotated[
    str,
    Field(
        max_length=1000,
        json_schema_extra={"pattern": rules.room_name_pattern(rules.ROOM_NAME_DEFAULT_MAX)},
    ),
]
"""A new room's name (its length bound is a setting: checked by the route)."""
