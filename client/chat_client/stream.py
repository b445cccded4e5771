"""`StreamClient`: a room's events over Server-Sent Events and sends over REST, for
networks where WebSockets do not pass (proxies) and for scripts.

```python
async with StreamClient("http://127.0.0.1:8000", token=TOKEN, rooms=["general"]) as chat:
    await chat.send("general", "hello")
    async for event in chat:          # the same frames as on a WebSocket
        print(event)
```

Iterating reads `GET /api/stream?rooms=...`; when the stream drops (network, server
restart or shutdown: `close` 1001, too slow: 4008) it reconnects with the last event's
`id` as `Last-Event-ID`, so nothing is lost or repeated. `send` posts to
`POST /api/rooms/{room}/messages` with one `ref`, retried on 429/503 and network
errors: the server stores it once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import ValidationError

from chat_client.api import HttpApi
from chat_client.connection import USER_AGENT, http_base_url
from chat_client.errors import (
    ApiError,
    AuthenticationError,
    ConnectionFailedError,
    RevokedError,
    short,
)
from chat_client.protocol import AckFrame, CloseCode, ServerFrame, parse_server_frame

if TYPE_CHECKING:
    import httpx

__all__ = ["StreamClient", "rest_send"]

log = logging.getLogger(__name__)
# Close codes after which a reconnect cannot succeed with the same token.
_FINAL = {
    CloseCode.POLICY: AuthenticationError,
    CloseCode.TOKEN_EXPIRED: AuthenticationError,
    CloseCode.REVOKED: RevokedError,
}
_SEND_ATTEMPTS = 4  # a REST send lost on the network is resent (same ref) this often


async def rest_send(
    api: HttpApi,
    room: str,
    body: str,
    *,
    ref: str | None = None,
    reply_to: int | None = None,
    attachments: Sequence[str] | None = None,
    attempts: int = _SEND_ATTEMPTS,
) -> AckFrame:
    """`POST /api/rooms/{room}/messages` with one `ref`: 429 and 503 are retried by
    `HttpApi`, a network failure here (up to `attempts` tries); the server stores the
    message once whatever the retries. Raises `ApiError`, `ConnectionFailedError`."""
    payload: dict[str, Any] = {"body": body, "ref": ref or f"rest-{uuid.uuid4().hex}"}
    if reply_to is not None:
        payload["reply_to"] = reply_to
    if attachments:
        payload["attachments"] = list(attachments)
    path = f"/api/rooms/{quote(room, safe='')}/messages"
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return AckFrame.model_validate(await api.request("POST", path, json=payload))
        except ConnectionFailedError:
            if attempt >= attempts:
                raise
            await asyncio.sleep(min(5.0, 0.25 * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


class StreamClient:
    """Events of `rooms` (and the user's notifications) over SSE; `send` over REST."""

    def __init__(
        self,
        url: str,
        *,
        token: str,
        rooms: Sequence[str],
        last_event_id: str | None = None,
        max_connect_attempts: int = 8,
        backoff_initial: float = 0.25,
        backoff_max: float = 5.0,
        timeout: float = 30.0,
    ) -> None:
        """`url`: the server's HTTP base (`http://host:8000`) or its WebSocket URL.
        `last_event_id`: resume a stream a previous client read (its `last_event_id`)."""
        if not rooms:
            raise ValueError("name at least one room")
        self.base_url = http_base_url(url).rstrip("/")
        self.rooms = tuple(rooms)
        self.last_event_id = last_event_id  # where a reconnect resumes
        self.reconnects = 0
        self._token = token
        self._attempts = max(1, max_connect_attempts)
        self._backoff = (backoff_initial, backoff_max)
        self._timeout = timeout
        self._api = HttpApi(self.base_url, timeout=timeout, token=self._get_token)
        self._http: httpx.AsyncClient | None = None
        self._events: AsyncIterator[ServerFrame] | None = None

    async def _get_token(self) -> str:
        return self._token

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop reading and close the HTTP connections."""
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]
            self._events = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self._api.aclose()

    async def send(
        self,
        room: str,
        body: str,
        *,
        ref: str | None = None,
        reply_to: int | None = None,
        attachments: Sequence[str] | None = None,
    ) -> AckFrame:
        """Send a message and return its ack once stored. Raises `ApiError` when refused
        (its `code` as on a WebSocket), `ConnectionFailedError` when unreachable."""
        return await rest_send(
            self._api, room, body, ref=ref, reply_to=reply_to, attachments=attachments
        )

    def __aiter__(self) -> StreamClient:
        return self

    async def __anext__(self) -> ServerFrame:
        if self._events is None:
            self._events = self._follow()
        return await self._events.__anext__()

    async def _follow(self) -> AsyncIterator[ServerFrame]:
        """Every event, across reconnects; raises when reconnecting cannot help."""
        import httpx

        failures = 0
        while True:
            try:
                async for kind, data, event_id in self._read_once():
                    failures = 0
                    if kind == "close":
                        code = int(json.loads(data).get("code", CloseCode.GOING_AWAY))
                        final = _FINAL.get(code)
                        if final is not None:
                            raise final(f"the server ended the stream ({code})", close_code=code)
                        log.info("stream closed by the server (%s): resuming", code)
                        break
                    if event_id is not None:
                        self.last_event_id = event_id
                    try:
                        yield parse_server_frame(data)
                    except ValidationError:
                        log.debug("skipping an event of an unknown type: %s", kind)
            except (httpx.TransportError, ConnectionFailedError) as exc:
                failures += 1
                if failures >= self._attempts:
                    raise ConnectionFailedError(
                        f"cannot reach {self.base_url}: {short(exc)}"
                    ) from exc
                log.info("stream lost (%s): reconnecting", short(exc))
            await asyncio.sleep(self._delay(failures))
            self.reconnects += 1

    async def _read_once(self) -> AsyncIterator[tuple[str, str, str | None]]:
        """One stream's events `(event, data, id)` until it ends."""
        client = self._client()
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        params = {"rooms": ",".join(self.rooms)}
        async with client.stream("GET", "/api/stream", params=params, headers=headers) as answer:
            if answer.status_code != 200:
                await answer.aread()
                _refuse(answer)
            data: list[str] = []
            kind, event_id = "message", None
            async for line in answer.aiter_lines():
                if not line:  # the end of an event
                    if data:
                        yield kind, "\n".join(data), event_id
                    kind, data, event_id = "message", [], None
                elif line.startswith(":"):
                    continue  # a keep-alive comment
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        kind = value
                    elif field == "data":
                        data.append(value)
                    elif field == "id":
                        event_id = value

    def _client(self) -> httpx.AsyncClient:
        import httpx

        if self._http is None:
            # No read timeout: a quiet stream is kept alive by comments.
            timeout = httpx.Timeout(self._timeout, read=None)
            self._http = httpx.AsyncClient(
                base_url=self.base_url, timeout=timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._http

    def _delay(self, attempt: int) -> float:
        first, most = self._backoff
        return float(min(most, first * 2 ** max(0, attempt - 1)))


def _refuse(answer: httpx.Response) -> None:
    """Raise for a stream the server refused (before it started)."""
    try:
        body = answer.json()
    except ValueError:
        body = {}
    detail = str(body.get("detail") or answer.reason_phrase)
    if answer.status_code == 401:
        raise AuthenticationError(f"the server refused the token: {detail}", status=401)
    if answer.status_code in (429, 503):
        raise ConnectionFailedError(f"HTTP {answer.status_code}: {detail}")  # retried
    raise ApiError(answer.status_code, detail, body.get("code"))
