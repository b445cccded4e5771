"""What a name or a message body may be: normalized once, refused with a clear reason.

Each rule also has its JSON Schema words (`*_PATTERN`, `*_schema`), used by the
request models so that the OpenAPI document states the rule the server applies
(tests/test_openapi.py checks that the two agree).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

# Direct-message rooms are named `dm:<low id>:<high id>` (`chat.storage.dms`); no
# user-created room name may start with it, in any case.
DM_PREFIX = "dm:"
DISPLAY_NAME_MAX = 64
ROOM_NAME_DEFAULT_MAX = 64  # the default of CHAT_MAX_ROOM_NAME_CHARS
TOPIC_MAX = 500
USERNAME_MIN, USERNAME_MAX = 3, 32
USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
# A new username as it must be given: no folding, no trimming (lookups still fold).
USERNAME_PATTERN = rf"^[A-Za-z0-9_.\-]{{{USERNAME_MIN},{USERNAME_MAX}}}$"


@functools.cache
def _category_runs() -> tuple[tuple[int, int, str], ...]:
    """Every code point as ranges of one Unicode category (surrogates: ""), read once:
    a class below is then built from a few thousand ranges, not a million lookups."""
    runs: list[tuple[int, int, str]] = []
    category = unicodedata.category
    start, current = 0, category(chr(0))
    for cp in range(1, sys.maxunicode + 1):
        kind = "" if 0xD800 <= cp <= 0xDFFF else category(chr(cp))
        if kind != current:
            runs.append((start, cp - 1, current))
            start, current = cp, kind
    runs.append((start, sys.maxunicode, current))
    return tuple(runs)


# Every whitespace character is in the Basic Multilingual Plane.
_SPACES = frozenset(chr(cp) for cp in range(0x10000) if chr(cp).isspace())


def char_class(
    excluded: frozenset[str], keep: str = "", *, spaces: bool = True, leave_out: str = ""
) -> str:
    """A regex class of every character outside the Unicode categories `excluded` (and
    of the characters `keep`); `spaces=False` leaves out whitespace too, `leave_out`
    these characters. Written as a negated class of the few ranges left out (BMP as
    `\\uXXXX` escapes, the rest literally): short, and quick for a test generator to
    draw from. Surrogates are not named (no UTF-8 text holds one, and schema
    validators refuse them in a pattern): `has_surrogate` checks for them."""
    out = [(a, b) for a, b, kind in _category_runs() if kind in excluded]
    singles = set(leave_out) | (set() if spaces else set(_SPACES))
    out += [(ord(c), ord(c)) for c in singles if not 0xD800 <= ord(c) <= 0xDFFF]
    kept = sorted({ord(c) for c in keep if c not in singles})
    ranges: list[tuple[int, int]] = []
    for a, b in sorted(out):
        for k in kept:  # cut the kept characters out of the range
            if a <= k <= b:
                if a < k:
                    ranges.append((a, k - 1))
                a = k + 1
        if a <= b:
            ranges.append((a, b))
    merged: list[tuple[int, int]] = []
    for a, b in ranges:
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))

    def one(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)

    return "[^" + "".join(one(a) if a == b else f"{one(a)}-{one(b)}" for a, b in merged) + "]"


# What a name may hold: no control or invisible characters (room names), and what
# `str.isprintable()` allows, unassigned code points aside (display names, topics).
_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
PRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Zl", "Zp", "Zs"})  # and surrogates
NAME_CHAR = char_class(_NAME_CATEGORIES)
PRINTABLE_CHAR = char_class(PRINTABLE_CATEGORIES, keep=" ")
_PRINTABLE = re.compile(f"{PRINTABLE_CHAR}*")
_NAME = re.compile(f"{NAME_CHAR}*")
_SURROGATE = re.compile("[\\ud800-\\udfff]")


def has_surrogate(text: str) -> bool:
    """A lone surrogate (from a JSON `\\ud800` escape): no character, refused everywhere."""
    return _SURROGATE.search(text) is not None


def trimmed_pattern(char: str, glyph: str, low: int, high: int) -> str:
    """A pattern of a string that, trimmed of whitespace at both ends, is `low` (0 or 1)
    to `high` characters of the class `char`, the first and last of them `glyph` (the
    same class without whitespace)."""
    core = f"{glyph}(?:{char}{{0,{high - 2}}}{glyph})?"
    return rf"^\s*{core}\s*$" if low >= 1 else rf"^\s*(?:{core})?\s*$"


class InputError(ValueError):
    """Input that breaks a documented rule; the message says which."""


class Conflict(Exception):
    """The thing already exists (a username or a room name)."""


def check_username(name: str) -> str:
    """A new username, exactly as given (`USERNAME_PATTERN`). Raises `InputError`.

    Anything outside ASCII letters, digits, `_`, `.` and `-` (fullwidth look-alikes
    and zero-width spaces included) is refused.
    """
    if not USERNAME_MIN <= len(name) <= USERNAME_MAX:
        raise InputError(f"username must be {USERNAME_MIN} to {USERNAME_MAX} characters")
    if not set(name) <= USERNAME_CHARS:
        raise InputError("username may contain only letters, digits, '_', '.' and '-'")
    return name


def normalize_username(raw: str) -> tuple[str, str]:
    """Return (name, uniqueness key) of a name looked up. Raises `InputError`.

    NFKC folds compatibility look-alikes (fullwidth letters) and the ends are
    trimmed, so a lookup finds the account however it is typed.
    """
    name = check_username(unicodedata.normalize("NFKC", raw).strip())
    return name, name.casefold()


def normalize_room_name(raw: str, max_chars: int) -> str:
    """A room name: NFC, trimmed, printable, bounded. Raises `InputError`."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InputError("room name must not be empty")
    if len(name) > max_chars:
        raise InputError(f"room name must be at most {max_chars} characters")
    if not _NAME.fullmatch(name) or has_surrogate(name):
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
    if not _PRINTABLE.fullmatch(name) or has_surrogate(name):
        raise InputError("display_name must contain only printable characters")
    return name


def normalize_topic(raw: str | None) -> str | None:
    """A room topic: NFC, trimmed, at most `TOPIC_MAX` characters, one printable line;
    empty (or None) clears it. Raises `InputError`."""
    topic = unicodedata.normalize("NFC", raw or "").strip()
    if len(topic) > TOPIC_MAX:
        raise InputError(f"topic must be at most {TOPIC_MAX} characters")
    if not _PRINTABLE.fullmatch(topic) or has_surrogate(topic):
        raise InputError("topic must be one line of printable characters")
    return topic or None


# `check_body` as a pattern: no NUL, and something visible (not only spaces,
# controls or invisible characters).
BODY_PATTERN = (
    "^[^\\u0000]*"
    + char_class(frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"}), spaces=False)
    + "[^\\u0000]*$"
)


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


def room_name_pattern(max_chars: int) -> str:
    """`normalize_room_name`'s rule as a pattern (NFC aside): trimmed, 1 to `max_chars`
    characters, none control or invisible, not starting with `dm:` in any case."""
    glyph = char_class(_NAME_CATEGORIES, spaces=False)
    return trimmed_pattern(NAME_CHAR, glyph, 1, max_chars).replace("^\\s*", "^\\s*(?![dD][mM]:)", 1)


_PRINTABLE_GLYPH = char_class(PRINTABLE_CATEGORIES, spaces=False)

# A reaction: printable glyphs, no spaces, with the invisible characters that do belong
# inside emoji: the zero-width joiner of sequences (family, professions) and the tag
# characters of subdivision flags.
EMOJI_MAX = 16
_EMOJI_JOINERS = "\u200d" + "".join(map(chr, range(0xE0020, 0xE0080)))
EMOJI_PATTERN = f"^{char_class(PRINTABLE_CATEGORIES, keep=_EMOJI_JOINERS, spaces=False)}+$"
_EMOJI = re.compile(EMOJI_PATTERN)


def check_emoji(emoji: str) -> str | None:
    """Why a reaction is refused (`EMOJI_PATTERN`), or None."""
    if not _EMOJI.fullmatch(emoji) or has_surrogate(emoji):
        return "emoji must be printable and contain no spaces"
    return None


DISPLAY_NAME_PATTERN = trimmed_pattern(PRINTABLE_CHAR, _PRINTABLE_GLYPH, 1, DISPLAY_NAME_MAX)
TOPIC_PATTERN = trimmed_pattern(PRINTABLE_CHAR, _PRINTABLE_GLYPH, 0, TOPIC_MAX)
