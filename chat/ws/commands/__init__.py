"""One handler per client frame type, found by the parsed frame's class.

A new frame type is a model in `chat.protocol`, a handler here, and one line in
`COMMANDS`; the session's loop does not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chat.protocol import AuthIn, JoinIn, LeaveIn, PingIn, SendIn, TypingIn
from chat.ws.commands.reauth import reauth
from chat.ws.commands.rooms import join, leave
from chat.ws.commands.send import send
from chat.ws.commands.signals import ping, typing

if TYPE_CHECKING:
    from chat.ws.session import Session

Command = Callable[["Session", Any], Awaitable[None]]

COMMANDS: dict[type, Command] = {
    SendIn: send,
    JoinIn: join,
    LeaveIn: leave,
    TypingIn: typing,
    PingIn: ping,
    AuthIn: reauth,
}
