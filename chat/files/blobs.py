"""Where file bytes live: a `BlobStore` (put, open, delete by key), local disk by default.

Keys are content hashes (`<sha256>`, `<sha256>.thumb`), never user input. Another
store (S3-compatible, e.g. through aiobotocore) only has to implement the Protocol.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 64 * 1024
_KEY = re.compile(r"[0-9a-f]{64}(\.thumb)?")


class BlobMissing(Exception):
    """No blob under that key (deleted meanwhile, or lost)."""


class BlobStore(Protocol):
    async def put(self, key: str, source: Path) -> None:
        """Move the local file `source` in under `key` (same key, same bytes: replaces)."""

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; raises `BlobMissing` before the first one."""

    async def delete(self, key: str) -> None:
        """Remove the blob (nothing happens when it is absent)."""


class LocalBlobs:
    """Blobs as files under `root/ab/cd/<key>`; `root/tmp` holds uploads in progress
    (the same file system, so `put` is an atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):  # a programming error, never user input
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key[:2] / key[2:4] / key

    async def put(self, key: str, source: Path) -> None:
        target = self.path(key)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(os.replace, source, target)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(self.path(key).open, "rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        return _chunks(handle)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()
