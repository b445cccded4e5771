"""What a name or a message body may be: normalized once, refused with a clear reason."""

from __future__ import annotations

import unicodedata

# Direct-message rooms are named `dm:<low id>:<high id>` (`chat.storage.dms`); no
# user-created room name may start with it, in any case.
DM_PREFIX = "dm:"
DISPLAY_NAME_MAX = 64
TOPIC_MAX = 500
USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class InputError(ValueError):
    """Input that breaks a documented rule; the message says which."""


class Conflict(Exception):
    """The thing already exists (a username or a room name)."""


def normalize_username(raw: str) -> tuple[str, str]:
    """Return (display name, uniqueness key). Raises `InputError`.

    NFKC folds compatibility look-alikes (fullwidth letters); anything outside
    ASCII letters, digits, `_`, `.` and `-` (zero-width spaces included) is refused.
    """
    name = unicodedata.normalize("NFKC", raw).strip()
    if not 3 <= len(name) <= 32:
        raise InputError("username must be 3 to 32 characters")
    if not set(name) <= USERNAME_CHARS:
        raise InputError("username may contain only letters, digits, '_', '.' and '-'")
    return name, name.casefold()


def normalize_room_name(raw: str, max_chars: int) -> str:
    """A room name: NFC, trimmed, printable, bounded. Raises `InputError`."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InputError("room name must not be empty")
    if len(name) > max_chars:
        raise InputError(f"room name must be at most {max_chars} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise InputError("room name must not contain control or invisible characters")
    if name.casefold().startswith(DM_PREFIX):
        raise InputError(f"room names starting with {DM_PREFIX!r} are reserved for direct messages")
    return name


def normalize_display_name(raw: str) -> str:
    """A display name: NFC, trimmed, 1 to `DISPLAY_NAME_MAX` printable characters.
    Raises `InputError`."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not 1 <= len(name) <= DISPLAY_NAME_MAX:
        raise InputError(f"display_name must be 1 to {DISPLAY_NAME_MAX} characters")
    if not name.isprintable():
        raise InputError("display_name must contain only printable characters")
    return name


def normalize_topic(raw: str | None) -> str | None:
    """A room topic: NFC, trimmed, at most `TOPIC_MAX` characters, one printable line;
    empty (or None) clears it. Raises `InputError`."""
    topic = unicodedata.normalize("NFC", raw or "").strip()
    if len(topic) > TOPIC_MAX:
        raise InputError(f"topic must be at most {TOPIC_MAX} characters")
    if not topic.isprintable():
        raise InputError("topic must be one line of printable characters")
    return topic or None


def check_body(body: str) -> str | None:
    """Why a message body is refused, or None when it is fine (length checked elsewhere)."""
    if body.isprintable() and body.strip(" "):  # the common case, at C speed
        return None
    if "\x00" in body:
        return "body must not contain NUL characters"
    visible = "".join(c for c in body if unicodedata.category(c) not in ("Cf", "Cc", "Zs"))
    if not visible.strip():
        return "body must not be empty or only whitespace"
    return None
