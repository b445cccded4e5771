"""Paging a room's stored messages over HTTP, to fill a gap the WebSocket left.

Only a long gap needs it (a `join ... since` replay longer than the server's cap, or
messages missed while connected), so `httpx` is imported on first use.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from chat_client.connection import USER_AGENT
from chat_client.errors import short
from chat_client.protocol import MessageFrame

if TYPE_CHECKING:
    import httpx

__all__ = ["PAGE", "History", "HistoryError"]

PAGE: Final = 100  # messages asked for per request


class HistoryError(Exception):
    """A page of history could not be fetched or read."""


class History:
    """Reads `GET /api/rooms/{room}/messages?after=SEQ` from the server at `base_url`."""

    def __init__(
        self, base_url: str, *, timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._verify: ssl.SSLContext | bool = ssl_context or True
        self._http: httpx.AsyncClient | None = None

    async def after(self, room: str, after: int, token: str) -> list[MessageFrame]:
        """Up to `PAGE` messages of `room` with a seq above `after`, oldest first.

        Raises `HistoryError` when the server cannot be asked or its answer read.
        """
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self._base_url,
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT},
                verify=self._verify,
            )
        try:
            response = await self._http.get(
                f"/api/rooms/{quote(room, safe='')}/messages",
                params={"after": after, "limit": PAGE},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            items = response.json()["items"]
            frames = [MessageFrame.model_validate(item, strict=False) for item in items]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise HistoryError(short(exc)) from exc
        return sorted(frames, key=lambda m: m.seq)

    async def aclose(self) -> None:
        """Close the HTTP connections, if any were opened. The object stays usable."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
