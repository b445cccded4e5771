"""Passwords: argon2id hashing off the event loop, bounded, at a lower CPU priority."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASH_NICENESS = 10  # hashing threads yield the CPU to the event loop


class PasswordService:
    """argon2id hashing off the event loop, with bounded concurrency.

    A login flood queues on the semaphore instead of spawning unbounded
    64 MiB hashing jobs; a dummy hash keeps timing equal for unknown users.
    """

    def __init__(
        self, concurrency: int, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._slots = asyncio.Semaphore(concurrency)
        # Hashing threads of their own, at a lower CPU priority: under a login flood
        # the cores go to the event loop first, and logins wait instead of chat.
        self._pool = ThreadPoolExecutor(
            concurrency, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when `password` matches; spends the same time when there is no hash."""
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._verify, stored_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy, password) and (
                stored_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def _lower_priority() -> None:
    """Raise this thread's nice value (Linux applies it per thread); best effort."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)
