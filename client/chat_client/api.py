"""Authenticated JSON requests to the server's HTTP API, with typed errors.

One pooled `httpx.AsyncClient` per `HttpApi`, opened on first use. A refusal becomes
`ApiError` (with the server's `detail`), a refused token `AuthenticationError`, an
unreachable server `ConnectionFailedError`; `429` and `503` answers (nothing was done)
are retried after their `Retry-After`, a few times.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from chat_client.connection import USER_AGENT
from chat_client.errors import ApiError, AuthenticationError, ConnectionFailedError, short

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpApi", "TokenSource"]

TokenSource = Callable[[], Awaitable[str]]
"""An async callable returning the access token to send."""

_RETRIES: Final = 3  # 429/503 answers retried before the error is raised
_MAX_RETRY_AFTER: Final = 30.0


class HttpApi:
    """Calls `base_url` (`http://host:8000`) with `Authorization: Bearer <token()>`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        token: TokenSource,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url
        self._timeout = timeout
        self._token = token
        self._verify: ssl.SSLContext | bool = ssl_context or True
        self._http: httpx.AsyncClient | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> Any:
        """The decoded JSON answer of a successful request (None when it has no body).

        Raises `ApiError`, `AuthenticationError` (401) and `ConnectionFailedError`.
        """
        import httpx

        client = self._client()
        attempt = 0
        while True:
            headers = {"Authorization": f"Bearer {await self._token()}"}
            try:
                response = await client.request(
                    method, path, params=params, json=json, headers=headers
                )
            except httpx.TransportError as exc:
                raise ConnectionFailedError(f"cannot reach {self.base_url}: {short(exc)}") from exc
            if response.status_code in (429, 503) and attempt < _RETRIES:
                attempt += 1
                await asyncio.sleep(_retry_after(response, attempt))
                continue
            return _answer(response)

    async def upload(self, path: str, fields: Mapping[str, str], file: Path) -> Any:
        """POST `file` as the multipart part `file` (read in chunks as it is sent, never
        whole in memory) with the text `fields` before it; the decoded JSON answer.

        Not retried (a refusal such as 413 would refuse again). Raises like `request`.
        """
        import httpx

        client = self._client()
        headers = {"Authorization": f"Bearer {await self._token()}"}
        try:
            with file.open("rb") as handle:
                response = await client.post(
                    path,
                    data=dict(fields),
                    files={"file": (file.name, handle, "application/octet-stream")},
                    headers=headers,
                )
        except httpx.TransportError as exc:
            raise ConnectionFailedError(f"cannot reach {self.base_url}: {short(exc)}") from exc
        return _answer(response)

    def _client(self) -> httpx.AsyncClient:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT},
                verify=self._verify,
            )
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP connections, if any were opened. The object stays usable."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _answer(response: httpx.Response) -> Any:
    if response.is_success:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "the answer is not JSON") from None
    detail = _detail(response)
    if response.status_code == 401:
        raise AuthenticationError(f"the server refused the token (HTTP 401): {detail}", status=401)
    raise ApiError(response.status_code, detail, _code(response))


def _code(response: httpx.Response) -> str | None:
    """The error answer's own `code` (files answers carry one), if any."""
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def _detail(response: httpx.Response) -> str:
    """The `detail` of an error answer, in one line (FastAPI's lists joined)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    text = str(detail) if detail else response.reason_phrase or f"HTTP {response.status_code}"
    return " ".join(text.split())


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        wait = float(response.headers.get("Retry-After", ""))
    except ValueError:
        wait = 0.5 * attempt
    return min(max(wait, 0.0), _MAX_RETRY_AFTER)
