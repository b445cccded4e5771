"""File names: what we keep of the client's, and how a response names the file."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

MAX_NAME_CHARS = 255


def safe_name(raw: str) -> str:
    """The client's file name without directories, control or format characters
    (bidi overrides included), at most 255 characters; "file" when nothing is left."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    kept = kept.lstrip(".") or "file"  # no hidden or `..` names
    return kept[:MAX_NAME_CHARS]


def content_disposition(kind: str, name: str) -> str:
    """`inline` or `attachment`, with an ASCII `filename` for old clients and the exact
    name as `filename*` (RFC 6266, RFC 5987 encoding)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name
    )
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
