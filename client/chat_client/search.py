"""Full-text search over HTTP: `GET /api/search`, answers as typed results.

A result is the message as history shows it (`MessageFrame`) and its snippet: the
text around the match in segments, the matching words marked (`match`), as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ValidationError

from chat_client.api import HttpApi
from chat_client.errors import ChatClientError
from chat_client.protocol import MessageFrame

__all__ = ["MAX_LIMIT", "SearchHit", "SearchPage", "Searcher", "SnippetSegment"]

MAX_LIMIT: Final = 50  # the server's largest page


class SnippetSegment(BaseModel):
    """A piece of a result's snippet; `match` is true for a word the query matched."""

    text: str
    match: bool


@dataclass(frozen=True)
class SearchHit:
    """A message found, and its snippet."""

    message: MessageFrame
    snippet: list[SnippetSegment]

    def marked(self, start: str = "[", end: str = "]") -> str:
        """The snippet as text, each matching word between `start` and `end`."""
        return "".join(f"{start}{s.text}{end}" if s.match else s.text for s in self.snippet)


@dataclass(frozen=True)
class SearchPage:
    """One page of results, and the `offset` of the next one (None: no more)."""

    items: list[SearchHit]
    next_offset: int | None


class Searcher:
    """Searches the messages the token's user can read, through `api`."""

    def __init__(self, api: HttpApi) -> None:
        self._api = api

    async def page(
        self,
        q: str,
        *,
        room: str | None = None,
        limit: int = 20,
        offset: int = 0,
        order: Literal["rank", "newest"] = "rank",
    ) -> SearchPage:
        """One page of results for `q`. Raises `ApiError` (422 with the reason for a
        query with nothing to search for or too long, 404 for a room you cannot read)."""
        params: dict[str, str | int] = {"q": q, "limit": limit, "offset": offset, "order": order}
        if room is not None:
            params["room"] = room
        answer = await self._api.request("GET", "/api/search", params=params)
        try:
            items = [
                SearchHit(
                    MessageFrame.model_validate(i, strict=False),  # `snippet` is ignored
                    [SnippetSegment.model_validate(s) for s in i["snippet"]],
                )
                for i in answer["items"]
            ]
            following = answer.get("next_offset")
        except (ValidationError, KeyError, TypeError, AttributeError) as exc:
            raise ChatClientError(f"unexpected answer to GET /api/search: {exc}") from None
        return SearchPage(items, following if isinstance(following, int) else None)
