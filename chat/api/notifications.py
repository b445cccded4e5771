"""The notification inbox over HTTP: list, mark read, send (admins and bots), and
each room's notification level."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import Field

from chat.api.audit import AuditDep
from chat.api.deps import Caller, HubDep, StoreDep
from chat.api.fields import RequestBody, WholeNumber
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ, readable_room
from chat.backends.limits import Limiter
from chat.protocol import NotificationFrame, NotificationsReadFrame, encode
from chat.storage.rules import (
    BODY_PATTERN,
    PRINTABLE_CATEGORIES,
    char_class,
    check_body,
    has_surrogate,
)

router = APIRouter(prefix="/api", tags=["notifications"])
PAGE_MAX = 100  # notifications per page
SEND_RATE, SEND_BURST = 5.0, 50  # `POST /api/notifications` per sender: per second, at once
TITLE_MAX, BODY_MAX, LINK_MAX = 200, 2000, 2000
# A link's characters: printable, no space, no backslash. A link: a path on this site,
# or an http(s) URL with a host (brackets left out: urlsplit refuses most of them).
_LINK_CHAR = char_class(PRINTABLE_CATEGORIES, leave_out=" \\")
_PATH_START = char_class(PRINTABLE_CATEGORIES, leave_out=" \\/")
_HOST_CHAR = char_class(PRINTABLE_CATEGORIES, leave_out=" \\/?#[]")
LINK_CHARS = re.compile(f"{_LINK_CHAR}*")
LINK_PATTERN = (
    rf"^(?:/(?:{_PATH_START}{_LINK_CHAR}*)?|[hH][tT][tT][pP][sS]?://{_HOST_CHAR}+"
    rf"(?:[/?#]{_LINK_CHAR}*)?)$"
)
_LINK = re.compile(LINK_PATTERN)


def _limits(request: Request) -> Limiter:
    limits: Limiter = request.app.state.services.backends.limits
    return limits


LimitsDep = Annotated[Limiter, Depends(_limits)]


class ReadIn(RequestBody):
    upto: Annotated[int, Field(ge=0, le=MAX_SEQ), WholeNumber]


class NotificationIn(RequestBody):
    username: str = Field(max_length=64)
    title: str = Field(
        min_length=1, max_length=TITLE_MAX, json_schema_extra={"pattern": BODY_PATTERN}
    )
    body: str = Field(
        min_length=1, max_length=BODY_MAX, json_schema_extra={"pattern": BODY_PATTERN}
    )
    link: str | None = Field(
        default=None, max_length=LINK_MAX, json_schema_extra={"pattern": LINK_PATTERN}
    )


class LevelIn(RequestBody):
    level: Literal["all", "mentions", "nothing"] | None


def _item(frame: NotificationFrame) -> dict[str, Any]:
    """A notification as HTTP shows it: the same JSON as its live frame."""
    return frame.model_dump(mode="json", exclude_none=True)


def link_problem(link: str) -> str | None:
    """Why `link` is refused, or None: only http(s) URLs and paths on this site
    (a `javascript:` or `data:` link would run in the page that shows it)."""
    if not LINK_CHARS.fullmatch(link) or has_surrogate(link):
        return "link must not contain spaces, control characters or backslashes"
    if _LINK.fullmatch(link):
        return None
    return "link must be an http(s) URL or a path starting with '/'"


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


@router.get("/notifications", responses=errors())
async def list_notifications(
    caller: Caller,
    store: StoreDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_SEQ)] = 50,
) -> dict[str, Any]:
    """The caller's notifications after id `after`, oldest first (at most 100 a page),
    and how many are unread."""
    items, unread = await store.notifications_after(caller.user.id, after, min(limit, PAGE_MAX))
    return {"items": [_item(f) for f in items], "unread": unread}


@router.post("/notifications/read", responses=errors())
async def mark_read(body: ReadIn, caller: Caller, store: StoreDep, hub: HubDep) -> dict[str, int]:
    """Mark every notification up to `upto` read (the mark never moves back, nor past
    the caller's newest); the caller's connections get `notifications_read`."""
    upto, unread = await store.mark_notifications_read(caller.user.id, body.upto)
    await hub.publish_user(caller.user.id, encode(NotificationsReadFrame(upto=upto, unread=unread)))
    return {"upto": upto, "unread": unread}


@router.post(
    "/notifications",
    status_code=status.HTTP_201_CREATED,
    responses=errors(
        (403, "the caller is neither an admin nor a bot"),
        (404, "no such user"),
        (422, "a field is empty, too long, or the link is not http(s) or a path"),
        (429, "too many notifications sent recently (Retry-After)"),
    ),
)
async def send_notification(
    body: NotificationIn,
    caller: Caller,
    store: StoreDep,
    hub: HubDep,
    limits: LimitsDep,
    audit: AuditDep,
) -> dict[str, Any]:
    """Admins and bots: notify a user (kind `app`, `from` the caller), live and in the inbox."""
    if caller.user.role not in ("admin", "bot"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only admins and bots send notifications")
    for field, text in (("title", body.title), ("body", body.body)):
        problem = check_body(text)
        if problem is not None:
            raise _unprocessable(problem.replace("body", field, 1))
    if body.link is not None and (problem := link_problem(body.link)) is not None:
        raise _unprocessable(problem)
    verdict = await limits.hit("notify", caller.user.id, SEND_RATE, SEND_BURST)
    if verdict.retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"at most {SEND_BURST} notifications at once and {SEND_RATE:g} per second",
            headers={"Retry-After": str(max(1, math.ceil(verdict.retry_after)))},
        )
    target = await store.user_by_name(body.username)
    sender = await store.user_by_id(caller.user.id)
    if target is None or sender is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
    notice = await store.add_app_notification(target.id, sender, body.title, body.body, body.link)
    await hub.publish_user(target.id, encode(notice.frame))
    await audit.by_admin(caller, "notification.send", "user", target.username, title=body.title)
    return _item(notice.frame)


@router.get("/rooms/{room:path}/notify", responses=errors(404))
async def get_level(room: str, caller: Caller, store: StoreDep) -> dict[str, Any]:
    """The caller's notification level in a room they can read (404 otherwise)."""
    view = await readable_room(store, caller, room)
    level, default = await store.notify_level(view.id, caller.user.id)
    return {"room": view.name, "level": level, "default": default}


@router.put("/rooms/{room:path}/notify", responses=errors(404))
async def set_level(body: LevelIn, room: str, caller: Caller, store: StoreDep) -> dict[str, Any]:
    """Choose what notifies the caller in a room: `all`, `mentions` or `nothing`
    (null: back to the room kind's default)."""
    view = await readable_room(store, caller, room)
    await store.set_notify_level(view.id, caller.user.id, body.level)
    level, default = await store.notify_level(view.id, caller.user.id)
    return {"room": view.name, "level": level, "default": default}
