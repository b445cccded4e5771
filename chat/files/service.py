"""`FileService`: an upload from request body to stored file, a download's permission,
releasing bytes nothing uses, and the periodic sweep of uploads never attached."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path

from chat.config import Settings
from chat.files import images
from chat.files.blobs import BlobStore, LocalBlobs
from chat.files.multipart import FileTooLarge, UploadError, receive_upload
from chat.files.names import safe_name
from chat.files.sniff import BINARY, IMAGE_TYPES, sniff
from chat.protocol import Attachment, UserRef
from chat.storage.attachments import attachment
from chat.storage.files import FileView, QuotaExceeded
from chat.storage.models import StoredFile
from chat.storage.store import Store

log = logging.getLogger(__name__)
FOLDER = "files"  # under the state dir


class UploadRefused(Exception):
    """An upload or download that is refused: an HTTP status, a code, a reason."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Download:
    file: FileView
    chunks: AsyncIterator[bytes]
    content_type: str
    size: int | None


class FileService:
    def __init__(self, settings: Settings, store: Store, blobs: BlobStore, tmp: Path) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.tmp = tmp
        self._sweeper: asyncio.Task[None] | None = None
        images.bound_pixels(settings.max_image_pixels)

    @classmethod
    def local(cls, settings: Settings, store: Store) -> FileService:
        """Files on local disk under `<state dir>/files`."""
        blobs = LocalBlobs(settings.state_dir / FOLDER)
        return cls(settings, store, blobs, blobs.tmp)

    # --- upload ---------------------------------------------------------------

    async def upload(
        self, user: UserRef, body: AsyncIterator[bytes], content_type: str
    ) -> Attachment:
        """Read a multipart upload (`room`, `file`) and store it; raises `UploadRefused`."""
        s = self.settings
        token = secrets.token_hex(16)
        temp, out, thumb = (self.tmp / f"{token}{suffix}" for suffix in ("", ".out", ".thumb"))
        checked: list[int] = []  # the room's id, once the caller may send in it

        async def on_field(name: str, value: str) -> None:
            if name == "room" and not checked:
                checked.append(await self._sendable_room(value, user))

        try:
            try:
                got = await receive_upload(body, content_type, temp, s.max_upload_bytes, on_field)
            except FileTooLarge:
                raise UploadRefused(
                    413, "too_large", f"the file is larger than {s.max_upload_bytes} bytes"
                ) from None
            except UploadError as exc:
                raise UploadRefused(400, "bad_upload", str(exc)) from None
            if "room" not in got.fields or got.path is None:
                raise UploadRefused(400, "bad_upload", "give the fields `room` and `file`")
            mime = sniff(got.head)
            size, sha256, width, height, has_thumb = got.size, got.sha256, None, None, False
            if mime in IMAGE_TYPES:
                try:
                    info = await asyncio.to_thread(
                        images.process, temp, mime, out, thumb, s.max_image_pixels, s.thumbnail_px
                    )
                except images.ImageTooLarge as exc:
                    raise UploadRefused(
                        422, "image_too_large", f"the image is too large to process: {exc}"
                    ) from None
                if info is None:
                    mime = BINARY  # not decodable as what it claims: an opaque file
                else:
                    width, height, has_thumb = info.width, info.height, True
                    if info.reencoded:
                        temp.unlink()
                        out.rename(temp)
                        size, sha256 = await asyncio.to_thread(_size_and_hash, temp)
            row = StoredFile(
                id=token,
                room_id=checked[0],
                user_id=user.id,
                name=safe_name(got.filename),
                size=size,
                content_type=mime,
                sha256=sha256,
                width=width,
                height=height,
                thumbnail=has_thumb,
                created_at=time.time(),
            )
            try:
                await self.store.add_file(row, s.upload_quota_bytes)
            except QuotaExceeded as exc:
                raise UploadRefused(413, "quota_exceeded", str(exc)) from None
            try:  # after the row commits: a release of the same content now keeps it
                if has_thumb:
                    await self.blobs.put(f"{sha256}.thumb", thumb)
                await self.blobs.put(sha256, temp)
            except BaseException:
                await self.store.forget_file(token)
                raise
            return attachment(row)
        finally:
            for path in (temp, out, thumb):
                path.unlink(missing_ok=True)

    async def _sendable_room(self, name: str, user: UserRef) -> int:
        """The room's id if `user` may send in it (as for `send`): readable, not archived."""
        room = await self.store.room_for(name, user)
        if room is None:
            raise UploadRefused(404, "not_found", "no such room, or you may not read it")
        if room.archived:
            raise UploadRefused(403, "forbidden", "the room is archived: read only")
        return room.id

    # --- download -------------------------------------------------------------

    async def download(self, file_id: str, user: UserRef, *, thumbnail: bool) -> Download:
        """The file (or its thumbnail) for a user who can read its room; else 404."""
        found = await self.store.file_by_id(file_id)
        if found is None or await self.store.room_for(found.room, user) is None:
            raise UploadRefused(404, "not_found", "no such file, or you may not read it")
        if thumbnail and not found.thumbnail:
            raise UploadRefused(404, "not_found", "this file has no thumbnail")
        key = f"{found.sha256}.thumb" if thumbnail else found.sha256
        try:
            chunks = await self.blobs.open(key)
        except Exception:
            log.warning("the bytes of file %s are missing", file_id)
            raise UploadRefused(404, "not_found", "the file's content is gone") from None
        if thumbnail:
            return Download(found, chunks, images.THUMBNAIL_TYPE, None)
        return Download(found, chunks, found.content_type, found.size)

    # --- cleanup --------------------------------------------------------------

    async def release(self, hashes: Collection[str]) -> None:
        """Remove the bytes (and thumbnails) of these hashes if no file uses them now."""
        if hashes:
            await self.store.release_content(hashes, self._remove)

    async def _remove(self, sha256: str) -> None:
        await self.blobs.delete(f"{sha256}.thumb")
        await self.blobs.delete(sha256)

    async def sweep(self) -> int:
        """Remove uploads older than `upload_ttl` that no message took; how many."""
        gone = await self.store.sweep_unattached(time.time() - self.settings.upload_ttl)
        await self.release(gone)
        return len(gone)

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="upload-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.upload_sweep_interval)
            try:
                swept = await self.sweep()
                if swept:
                    log.info("removed %d upload(s) never attached", swept)
            except Exception:
                log.exception("sweeping expired uploads failed")


def _size_and_hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
