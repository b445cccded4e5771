"""Presence shared by every process through Redis: per-connection entries that expire.

Keys (under the site prefix, `chat:` by default):
- `presence:users:<room>`: hash, user id -> user JSON, the users announced present;
- `presence:conns:<user id>:<room>`: sorted set of that user's connections in
  the room (`<process>:<connection>`), scored by when each entry expires, plus
  a `grace` entry while the user is within the leave grace period;
- `presence:rooms`: set of rooms with someone present (for the admin view).

Every process re-adds its own connections' entries every `ttl / 3` seconds, so
the entries of a process that crashed expire within `ttl` and the next sweep
(each process sweeps the rooms it has listeners in, on the same beat)
announces those users' leave. A user's first entry announces "join" and the
sweep that finds no live entry left announces "leave"; both are decided inside
one Lua script, so exactly one process announces each change, whichever
process the user's connections are on. Redis's own clock (`TIME`) is used, so
hosts' clocks need not agree.

The scripts compute key names, so they need a single Redis (not Redis Cluster).
When Redis is unreachable, presence calls log and fall back to what this
process knows; announcements are missed meanwhile and the next refresh after
Redis returns re-adds every live entry (a Redis restart that lost the keys
makes those users "join" again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections import defaultdict
from typing import Any, cast

from redis.asyncio import Redis

from chat.backends.presence import PresenceCallback
from chat.backends.redis_client import REDIS_DOWN, cancel_and_wait
from chat.protocol import UserRef

log = logging.getLogger(__name__)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: users hash, conns set, rooms set. ARGV: user id, entry, ttl ms, user JSON, room.
# Returns 1 when the user was not present before (announce "join").
JOIN = (
    _NOW
    + """
local ttl = tonumber(ARGV[3])
redis.call('ZREM', KEYS[2], 'grace')
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ttl * 2)
redis.call('SADD', KEYS[3], ARGV[5])
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[4])
"""
)

# KEYS: conns set. ARGV: entry, grace ms.
# Returns 1 when that was the user's last live connection in the room.
LEAVE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
local grace = tonumber(ARGV[2])
if grace > 0 then
  redis.call('ZADD', KEYS[1], now + grace, 'grace')
  redis.call('PEXPIRE', KEYS[1], grace + 1000)
end
return 1
"""
)

# KEYS: users hash, rooms set. ARGV: conns key prefix, room, ttl ms, then triples
# (user id, entry, user JSON) of this process's live connections in the room.
# Re-adds those entries, then removes users with no live entry left.
# Returns {users that were missing (announce "join"), users gone (announce "leave")}.
REFRESH = (
    _NOW
    + """
local prefix, room, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local fresh, gone = {}, {}
for i = 4, #ARGV, 3 do
  local key = prefix .. ARGV[i] .. ':' .. room
  redis.call('ZREM', key, 'grace')
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl * 2)
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then
    table.insert(fresh, ARGV[i + 2])
  end
end
if #ARGV >= 4 then redis.call('SADD', KEYS[2], room) end
local users = redis.call('HGETALL', KEYS[1])
for i = 1, #users, 2 do
  local key = prefix .. users[i] .. ':' .. room
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) == 0 then
    redis.call('HDEL', KEYS[1], users[i])
    table.insert(gone, users[i + 1])
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], room) end
return {fresh, gone}
"""
)


def _user_json(user: UserRef) -> str:
    return json.dumps(user.model_dump(), separators=(",", ":"))


def _user(raw: str) -> UserRef:
    return UserRef.model_validate(json.loads(raw))


def _by_name(users: list[UserRef]) -> list[UserRef]:
    return sorted(users, key=lambda u: u.name)


class RedisPresence:
    """`PresenceStore` in Redis, shared by every process of a site."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        grace: float,
        ttl: float,
        on_change: PresenceCallback,
    ) -> None:
        self._redis = client
        self._grace = grace
        self._ttl = ttl
        self._on_change = on_change
        self._users_key = f"{prefix}presence:users:"
        self._conns_key = f"{prefix}presence:conns:"
        self._rooms_key = f"{prefix}presence:rooms"
        self._process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._join = client.register_script(JOIN)
        self._leave = client.register_script(LEAVE)
        self._refresh = client.register_script(REFRESH)
        # This process's connections: room -> connection id -> user.
        self._local: dict[str, dict[int, UserRef]] = defaultdict(dict)
        # One presence operation at a time, so a refresh never re-adds a removed entry.
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._beat: asyncio.Task[None] | None = None

    # --- life -----------------------------------------------------------------

    async def start(self) -> None:
        self._beat = asyncio.create_task(self._heartbeat(), name="presence-refresh")

    async def stop(self) -> None:
        """Stop refreshing and remove this process's entries, announcing nothing.

        Leaves are announced by the other processes' sweeps after the grace
        period, unless the users reconnected elsewhere meanwhile (a rolling
        restart then shows no "leave, join" flicker).
        """
        if self._beat is not None:
            await cancel_and_wait(self._beat)
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        rooms, self._local = self._local, defaultdict(dict)
        for room, conns in rooms.items():
            for conn_id, user in conns.items():
                with contextlib.suppress(*REDIS_DOWN):
                    await self._leave(
                        keys=[self._conns(room, user.id)],
                        args=[self._entry(conn_id), int(self._grace * 1000)],
                    )

    # --- PresenceStore --------------------------------------------------------

    async def add(self, room: str, conn_id: int, user: UserRef) -> None:
        async with self._lock:
            self._local[room][conn_id] = user
            try:
                first = await self._join(
                    keys=[self._users(room), self._conns(room, user.id), self._rooms_key],
                    args=[user.id, self._entry(conn_id), self._ttl_ms, _user_json(user), room],
                )
            except REDIS_DOWN as exc:
                log.warning("presence join not recorded in redis: %r", exc)
                return
        if first:
            self._on_change(room, "join", user)

    async def remove(self, room: str, conn_id: int, user: UserRef) -> None:
        async with self._lock:
            conns = self._local.get(room)
            if conns is None or conns.pop(conn_id, None) is None:
                return
            if not conns:
                del self._local[room]
            try:
                last = await self._leave(
                    keys=[self._conns(room, user.id)],
                    args=[self._entry(conn_id), int(self._grace * 1000)],
                )
            except REDIS_DOWN as exc:
                log.warning("presence leave not recorded in redis: %r", exc)
                return
        if last:
            self._sweep_later(room, self._grace)

    async def members(self, room: str) -> list[UserRef]:
        try:
            raw = cast(list[str], await self._redis.hvals(self._users(room)))
        except REDIS_DOWN as exc:
            log.warning("presence read failed, answering with this process's view: %r", exc)
            local = {u.id: u for u in self._local.get(room, {}).values()}
            return _by_name(list(local.values()))
        return _by_name([_user(r) for r in raw])

    async def snapshot(self) -> dict[str, list[UserRef]]:
        try:
            rooms = sorted(cast(set[str], await self._redis.smembers(self._rooms_key)))
            async with self._redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.hvals(self._users(room))
                values: list[list[str]] = await pipe.execute()
        except REDIS_DOWN as exc:
            log.warning("presence read failed, answering with this process's view: %r", exc)
            return {room: await self.members(room) for room in self._local}
        return {
            room: _by_name([_user(r) for r in raw])
            for room, raw in zip(rooms, values, strict=True)
            if raw
        }

    # --- refresh and sweep ----------------------------------------------------

    async def refresh(self, room: str) -> None:
        """Re-add this process's entries in `room`, then announce who appeared or left."""
        async with self._lock:
            args: list[Any] = [self._conns_key, room, self._ttl_ms]
            for conn_id, user in self._local.get(room, {}).items():
                args += [user.id, self._entry(conn_id), _user_json(user)]
            fresh, gone = await self._refresh(keys=[self._users(room), self._rooms_key], args=args)
        for raw in fresh:
            self._on_change(room, "join", _user(raw))
        for raw in gone:
            self._on_change(room, "leave", _user(raw))

    async def _heartbeat(self) -> None:
        interval = self._ttl / 3
        while True:
            await asyncio.sleep(interval)
            for room in list(self._local):
                try:
                    await self.refresh(room)
                except REDIS_DOWN as exc:
                    log.warning("presence refresh failed: %r", exc)
                    break

    def _sweep_later(self, room: str, delay: float) -> None:
        """After the grace period, sweep `room` (announcing the leave if nobody came back)."""

        def fire() -> None:
            self._timers.discard(timer)
            task = asyncio.create_task(self._sweep(room), name="presence-sweep")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        timer = asyncio.get_running_loop().call_later(delay + 0.05 if delay else 0, fire)
        self._timers.add(timer)

    async def _sweep(self, room: str) -> None:
        try:
            await self.refresh(room)
        except REDIS_DOWN as exc:
            log.warning("presence sweep failed: %r", exc)

    # --- keys -----------------------------------------------------------------

    @property
    def _ttl_ms(self) -> int:
        return int(self._ttl * 1000)

    def _users(self, room: str) -> str:
        return self._users_key + room

    def _conns(self, room: str, user_id: int) -> str:
        return f"{self._conns_key}{user_id}:{room}"

    def _entry(self, conn_id: int) -> str:
        return f"{self._process}:{conn_id}"
