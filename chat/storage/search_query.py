"""The search language users type, parsed by us, never by the database.

A query is words and "quoted phrases", all required (AND); a word ending in `*`
(at least two letters before it) matches every word starting with it. Words are runs
of Unicode letters and digits, compared without case (lower-cased); everything else (operators such
as AND, OR, NOT, NEAR, `-`, `^`, `:`, parentheses, emoji) is a separator or an ordinary
word. The engines get only the terms we extracted, each quoted in their own syntax
(`fts5_match`, `tsquery`), so nothing a user types reaches MATCH or to_tsquery raw.

`highlight` marks the matching words of a body as data (segments), for snippets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chat.storage.rules import InputError

MAX_QUERY_CHARS = 500
MAX_TERMS = 16
MIN_PREFIX_CHARS = 2  # a shorter prefix would match half the index
SNIPPET_CHARS = 160  # about what a result shows around the first match

_WORD = re.compile(r"[^\W_]+")
# A quoted phrase, a word with an optional `*`, or one stray quote (ignored).
_PIECE = re.compile(r'"([^"]*)"|([^\W_]+)(\*?)|"')


@dataclass(frozen=True, slots=True)
class Term:
    """Words that must appear next to each other (one word: a plain term)."""

    words: tuple[str, ...]
    prefix: bool = False  # the last word is a prefix


@dataclass(frozen=True, slots=True)
class SearchQuery:
    terms: tuple[Term, ...]


def words(text: str) -> list[str]:
    """The case-folded words of `text`, as search sees them."""
    return [w.lower() for w in _WORD.findall(text)]


def parse_query(text: str) -> SearchQuery:
    """The terms of a query. Raises `InputError` (empty, too long, no words, too many)."""
    if not text.strip():
        raise InputError("the query must not be empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the query must be at most {MAX_QUERY_CHARS} characters")
    terms: list[Term] = []
    for match in _PIECE.finditer(text):
        phrase, word, star = match.groups()
        if phrase is not None:
            found = tuple(words(phrase))
            if found:
                terms.append(Term(found))
        elif word is not None:
            folded = word.lower()
            terms.append(Term((folded,), prefix=bool(star) and len(folded) >= MIN_PREFIX_CHARS))
    terms = list(dict.fromkeys(terms))  # a repeated term adds nothing
    if not terms:
        raise InputError("the query must contain at least one word (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise InputError(f"the query may contain at most {MAX_TERMS} words and phrases")
    return SearchQuery(tuple(terms))


def fts5_match(query: SearchQuery) -> str:
    """The FTS5 MATCH expression: every term a quoted string (words hold no quote)."""
    parts = []
    for term in query.terms:
        parts.append('"' + " ".join(term.words) + '"' + ("*" if term.prefix else ""))
    return " ".join(parts)  # FTS5: juxtaposition is AND


def tsquery(query: SearchQuery) -> str:
    """The `to_tsquery` text: quoted lexemes, `<->` within phrases, `&` between terms."""
    parts = []
    for term in query.terms:
        lexemes = [f"'{w}'" for w in term.words]  # words hold no quote or backslash
        if term.prefix:
            lexemes[-1] += ":*"
        parts.append("(" + " <-> ".join(lexemes) + ")")
    return " & ".join(parts)


def highlight(body: str, query: SearchQuery) -> list[dict[str, object]]:
    """A snippet of `body` as segments `{"text", "match"}`: the words of the query marked,
    cut to about `SNIPPET_CHARS` around the first match ("…" where text was left out)."""
    exact = {w for t in query.terms for w in (t.words if not t.prefix else t.words[:-1])}
    prefixes = tuple(t.words[-1] for t in query.terms if t.prefix)
    spans = [
        m.span()
        for m in _WORD.finditer(body)
        if (w := m.group().lower()) in exact or (prefixes and w.startswith(prefixes))
    ]
    start, end = 0, len(body)
    if len(body) > SNIPPET_CHARS:
        first = spans[0][0] if spans else 0
        start = max(0, first - SNIPPET_CHARS // 4)
        end = min(len(body), start + SNIPPET_CHARS)
    segments: list[dict[str, object]] = []
    if start > 0:
        segments.append({"text": "…", "match": False})
    at = start
    for s, e in spans:
        if s < start or e > end:
            continue
        if s > at:
            segments.append({"text": body[at:s], "match": False})
        segments.append({"text": body[s:e], "match": True})
        at = e
    if at < end:
        segments.append({"text": body[at:end], "match": False})
    if end < len(body):
        segments.append({"text": "…", "match": False})
    return segments
