"""One handler per client frame type, found by the parsed frame's class.

A new frame type is a model in `chat.protocol`, a handler here, and one line in
`COMMANDS`; the session's loop does not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chat.protocol import (
    AuthIn,
    DeleteIn,
    EditIn,
    JoinIn,
    LeaveIn,
    PingIn,
    ReactIn,
    ReadIn,
    SendIn,
    TypingIn,
    WatchIn,
)
from chat.ws.commands.changes import delete, edit, react
from chat.ws.commands.context import CommandContext
from chat.ws.commands.read import read
from chat.ws.commands.reauth import reauth
from chat.ws.commands.rooms import join, leave
from chat.ws.commands.send import send
from chat.ws.commands.signals import ping, typing
from chat.ws.commands.watch import watch

Command = Callable[[CommandContext, Any], Awaitable[None]]

COMMANDS: dict[type, Command] = {
    SendIn: send,
    EditIn: edit,
    DeleteIn: delete,
    ReactIn: react,
    ReadIn: read,
    JoinIn: join,
    LeaveIn: leave,
    TypingIn: typing,
    PingIn: ping,
    AuthIn: reauth,
    WatchIn: watch,
}
