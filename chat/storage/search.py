"""Full-text search over messages: one interface, an engine per database.

SQLite: the FTS5 table `messages_fts` (external content: it indexes `messages.body`,
rowid = message id) kept current by triggers on `messages`, so an insert, an edit, a
deletion (body emptied) and a purge change the index in the same transaction as the
row. PostgreSQL: the stored generated column `messages.search_vector`
(`to_tsvector('simple', body)`) with a GIN index. Both use the same rules, no
stemming and no stop words (`simple`, `unicode61`), so a query finds the same messages
on either. Migration 0005_search creates them; the models leave them out (see
`SEARCH_OBJECTS`).

A search returns the messages of rooms the user can read (public, member, admin;
direct-message rooms only for their two members), best match first (bm25 / ts_rank)
among the newest `RANK_WINDOW` matches, newest first among equals; or newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy import ColumnElement, and_, exists, or_, select

from chat.protocol import MessageFrame, UserRef
from chat.storage.db import Database
from chat.storage.messages import MessageQueries
from chat.storage.models import Message, Room, RoomMember, User
from chat.storage.search_query import SearchQuery, fts5_match, highlight, tsquery

Order = Literal["rank", "newest"]

# Ranking reads every candidate's score: a word in a third of a million messages would
# cost seconds. Only the newest matches (that the user may read) are ranked.
RANK_WINDOW = 5_000


class SearchTooSlow(Exception):
    """The search ran past `search_timeout` (PostgreSQL): narrow it (more words, a room).

    A few queries there (words common alone, rare together) read most of the table
    (bench/README.md): cut off, rather than hold a connection on anyone's say-so."""


# Schema objects of search that the ORM models do not describe (they exist on one
# dialect only): the migration-vs-models comparison leaves them out.
FTS_TABLE = "messages_fts"
SEARCH_OBJECTS = frozenset({"search_vector", "ix_messages_search_vector"})


def is_search_object(name: str | None) -> bool:
    """Whether a reflected table, column or index is one of search's (FTS5's shadow
    tables included), for Alembic's `include_name` / `include_object` filters."""
    return name is not None and (name in SEARCH_OBJECTS or name.startswith(FTS_TABLE))


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message found, and its snippet: segments `{"text", "match"}`."""

    frame: MessageFrame
    snippet: list[dict[str, object]]


class SearchEngine(Protocol):
    """How one database matches and ranks: a select of the ids of the messages matching
    `query` and `filters`, in `order`; ranked among the newest `RANK_WINDOW` of them."""

    def ids(
        self, query: SearchQuery, order: Order, filters: Sequence[ColumnElement[bool]]
    ) -> sa.Select[Any]: ...


class Fts5Engine:
    """SQLite FTS5: `MATCH` on quoted terms, `bm25()` (lower is better)."""

    def ids(
        self, query: SearchQuery, order: Order, filters: Sequence[ColumnElement[bool]]
    ) -> sa.Select[Any]:
        fts: ColumnElement[Any] = sa.literal_column(FTS_TABLE)
        # The index's own rowid (the message id): FTS5 walks it newest first and can stop
        # at the page's end, where sorting by `messages.id` would read every match.
        rowid: ColumnElement[int] = sa.literal_column(f"{FTS_TABLE}.rowid")
        matches = (
            select(Message.id)
            .select_from(sa.table(FTS_TABLE))
            .join(Message, Message.id == rowid)
            .where(fts.op("MATCH")(sa.bindparam("match", fts5_match(query))), *filters)
        )
        if order == "newest":
            return matches.order_by(rowid.desc())
        # bm25() exists only in the MATCH query itself: bound it to the window by rowid.
        floor = (
            matches.with_only_columns(rowid)
            .order_by(rowid.desc())
            .limit(1)
            .offset(RANK_WINDOW - 1)
            .scalar_subquery()
        )
        return matches.where(rowid >= sa.func.coalesce(floor, 0)).order_by(
            sa.func.bm25(fts).asc(), rowid.desc()
        )


class TsvectorEngine:
    """PostgreSQL: `@@` with a tsquery built from quoted lexemes, `ts_rank` (higher is
    better, divided by the log of the length like bm25 favours short messages)."""

    def ids(
        self, query: SearchQuery, order: Order, filters: Sequence[ColumnElement[bool]]
    ) -> sa.Select[Any]:
        vector: ColumnElement[Any] = sa.literal_column("messages.search_vector")
        config: ColumnElement[Any] = sa.literal_column("'simple'::regconfig")
        tsq = sa.func.to_tsquery(config, sa.bindparam("tsq", tsquery(query)))
        if order == "newest":
            return (
                select(Message.id).where(vector.op("@@")(tsq), *filters).order_by(Message.id.desc())
            )
        window = (
            select(Message.id.label("id"), vector.label("vector"))
            .where(vector.op("@@")(tsq), *filters)
            .order_by(Message.id.desc())
            .limit(RANK_WINDOW)
            .subquery()
        )
        rank = sa.func.ts_rank(window.c.vector, tsq, 1)
        return select(window.c.id).order_by(rank.desc(), window.c.id.desc())


def engine_for(db: Database) -> SearchEngine:
    return Fts5Engine() if db.is_sqlite else TsvectorEngine()


def readable_rooms(user: UserRef) -> sa.Select[int]:
    """Ids of the rooms whose messages `user` may search: public rooms, rooms they are a
    member of, every room for an admin; direct-message rooms only for their members."""
    member = exists().where(RoomMember.room_id == Room.id, RoomMember.user_id == user.id)
    not_dm = Room.kind != "dm"
    open_to: ColumnElement[bool] = (
        not_dm if user.role == "admin" else and_(not_dm, Room.private.is_(False))
    )
    return select(Room.id).where(or_(open_to, member))


class SearchQueries:
    db: Database
    search_timeout: float  # seconds, PostgreSQL

    async def search(
        self,
        user: UserRef,
        query: SearchQuery,
        *,
        room_id: int | None,
        order: Order,
        limit: int,
        offset: int,
    ) -> list[SearchHit]:
        """A page of the messages matching `query` that `user` may read (of one room when
        `room_id` is given: the caller checked it is readable), in `order`."""
        filters: list[ColumnElement[bool]] = [
            Message.room_id.in_(readable_rooms(user)),
            Message.deleted.is_(False),
        ]
        if room_id is not None:
            filters.append(Message.room_id == room_id)
        ids_query = engine_for(self.db).ids(query, order, filters).limit(limit).offset(offset)
        async with self.db.read() as s:
            if not self.db.is_sqlite:  # for this transaction only
                timeout_ms = max(1, round(self.search_timeout * 1000))
                await s.execute(sa.text(f"SET LOCAL statement_timeout = {timeout_ms}"))
            try:
                ids: list[int] = list((await s.execute(ids_query)).scalars())
            except sa.exc.DBAPIError as exc:
                if "statement timeout" in str(exc.orig):
                    raise SearchTooSlow from None
                raise
            if not ids:
                return []
            rows = (
                await s.execute(
                    select(Message, User, Room.name)
                    .join(User, User.id == Message.user_id)
                    .join(Room, Room.id == Message.room_id)
                    .where(Message.id.in_(ids))
                )
            ).tuples()
            by_room: dict[str, list[tuple[Message, User]]] = {}
            for msg, author, name in rows:
                by_room.setdefault(name, []).append((msg, author))
            frames: dict[int, MessageFrame] = {}
            for name, pairs in by_room.items():
                # As history shows them (reactions, replies, edits): one builder for both.
                built = await MessageQueries._frames(s, name, pairs)
                frames.update({f.id: f for f in built})
        return [SearchHit(frames[i], highlight(frames[i].body, query)) for i in ids if i in frames]
