"""Reading a `multipart/form-data` upload as it streams in: the file part goes to a
temporary file chunk by chunk (hashed and counted on the way), never whole in memory.

python-multipart's push parser does the parsing; this module keeps the bounds: the
file's size (`FileTooLarge` the moment it passes), the small text fields, the parts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 1024  # `room` and any other text field
MAX_PARTS = 8
MAX_HEADER_BYTES = 4096  # one part's headers
HEAD_BYTES = 8192


class UploadError(Exception):
    """The body is not a well-formed upload (a 400)."""


class FileTooLarge(Exception):
    """The file part passed the size bound; reading stopped there."""


@dataclass
class ReceivedUpload:
    """What came in: the text fields and, in `path`, the file (None when there was none)."""

    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str = ""
    size: int = 0
    sha256: str = ""
    head: bytes = b""


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    text: bytearray | None = None  # a text field's value
    is_file: bool = False


class _Reader:
    """Callbacks of the push parser: they only collect; the async loop writes."""

    def __init__(self, max_file: int) -> None:
        self.max_file = max_file
        self.upload = ReceivedUpload()
        self.part = _Part()
        self.parts = 0
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.pending: list[bytes] = []  # file bytes not yet written
        self.digest = hashlib.sha256()
        self.file_done = False
        self.ended = False
        self.error: str | None = None
        self.new_fields: list[str] = []

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self.error = f"more than {MAX_PARTS} parts"
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]
        self._bound_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        self._bound_header()

    def _bound_header(self) -> None:
        if len(self.header_field) + len(self.header_value) > MAX_HEADER_BYTES:
            self.error = "a part's headers are too long"

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self.part.name == "file" and filename is not None:
            if self.upload.path is not None or self.file_done:
                self.error = "more than one file part"
            self.part.is_file = True
            self.upload.filename = filename.decode("utf-8", "replace")
        else:
            self.part.text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.part.is_file:
            self.upload.size += len(chunk)
            if self.upload.size > self.max_file:
                raise FileTooLarge
            self.digest.update(chunk)
            self.pending.append(chunk)
        elif self.part.text is not None:
            self.part.text += chunk
            if len(self.part.text) > MAX_FIELD_BYTES:
                self.error = f"the field {self.part.name[:40]!r} is longer than {MAX_FIELD_BYTES}"

    def on_part_end(self) -> None:
        if self.part.is_file:
            self.file_done = True
        elif self.part.text is not None and self.part.name:
            try:
                self.upload.fields[self.part.name] = self.part.text.decode("utf-8")
            except UnicodeDecodeError:
                self.error = f"the field {self.part.name[:40]!r} is not UTF-8"
            self.new_fields.append(self.part.name)

    def on_end(self) -> None:
        self.ended = True


async def receive_upload(
    stream: AsyncIterator[bytes],
    content_type: str,
    temp: Path,
    max_file: int,
    on_field: Callable[[str, str], Awaitable[None]],
) -> ReceivedUpload:
    """Parse the body from `stream` into `temp` (the file part) and the text fields.

    `on_field(name, value)` runs as each text field completes, before more of the
    body is read (a permission check on `room` can refuse before the file lands).
    Raises `UploadError` (malformed), `FileTooLarge`; leaves `temp` to the caller.
    """
    mime, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise UploadError("send multipart/form-data with the fields `room` and `file`")
    reader = _Reader(max_file)
    callbacks = {
        name: getattr(reader, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
            "on_end",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    out: BinaryIO | None = None
    try:
        async for chunk in stream:
            try:
                parser.write(chunk)
            except FileTooLarge:
                raise
            except Exception as exc:  # the parser's own errors: a malformed body
                raise UploadError(f"the multipart body is malformed: {exc}") from None
            if reader.error:
                raise UploadError(reader.error)
            while reader.new_fields:
                name = reader.new_fields.pop(0)
                await on_field(name, reader.upload.fields[name])
            if reader.pending:
                if out is None:
                    out = await asyncio.to_thread(temp.open, "wb")
                data = b"".join(reader.pending)
                reader.pending.clear()
                if len(reader.upload.head) < HEAD_BYTES:  # what the type is sniffed from
                    reader.upload.head += data[: HEAD_BYTES - len(reader.upload.head)]
                await asyncio.to_thread(out.write, data)
            if reader.ended:
                break
        parser.finalize()
    finally:
        if out is not None:
            await asyncio.to_thread(out.close)
    if not reader.ended:
        raise UploadError("the body ended before the multipart message did")
    if reader.file_done:
        if out is None:  # an empty file
            await asyncio.to_thread(temp.touch)
        reader.upload.path = temp
        reader.upload.sha256 = reader.digest.hexdigest()
    return reader.upload
