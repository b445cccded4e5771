"""What the WebSocket layer uses from the rest of the server, and nothing more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat.auth.accounts import Accounts
from chat.backends.connections import ConnectionCounter
from chat.backends.limits import Limiter
from chat.config import Settings
from chat.files.service import FileService
from chat.hub import Connection, Hub
from chat.monitoring.abuse import AbuseMonitor
from chat.storage.memberships import MembershipRecorder
from chat.storage.store import Store
from chat.storage.writer import MessageWriter


@dataclass(frozen=True, slots=True)
class WsDeps:
    settings: Settings
    hub: Hub
    store: Store  # rooms, history, and the token checks' user facts
    accounts: Accounts  # authentication
    writer: MessageWriter  # sends go here; acks come back per sender
    files: FileService  # releases the bytes of a deleted message's files
    memberships: MembershipRecorder  # first joins of public rooms, stored in batches
    connections: ConnectionCounter  # per-user connection cap (Redis when set)
    limits: Limiter  # per-user frame and per-address handshake buckets (Redis when set)
    abuse: AbuseMonitor
    greet: Callable[[Connection], Awaitable[None]]  # active tasks' state for a new socket
    draining: Callable[[], bool]  # shutting down: refuse new sockets
