"""A file's type from its first bytes, never from its name or the client's say-so."""

from __future__ import annotations

import codecs
import re

import filetype  # type: ignore[import-untyped]

HEAD_BYTES = 8192
# The raster formats Pillow re-encodes and browsers show inline.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
# Types a browser could run as a document or script: never served as what they are.
_ACTIVE = ("html", "xml", "svg", "script", "x-shockwave")
_MIME = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")


def sniff(head: bytes) -> str:
    """The content type of a file starting with `head` (its first `HEAD_BYTES`).

    Known magic numbers first (the `filetype` package); then UTF-8 text without
    NUL or control characters is `text/plain` (HTML and SVG included: never served
    as markup); anything else is `application/octet-stream`.
    """
    kind = filetype.guess(head)
    if kind is not None:
        mime = str(kind.mime).lower()
        if _MIME.fullmatch(mime) and not any(word in mime for word in _ACTIVE):
            return mime
    return TEXT if _is_text(head) else BINARY


def _is_text(head: bytes) -> bool:
    try:  # not final: the head may end inside a character
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\n\r\f" for c in text)
