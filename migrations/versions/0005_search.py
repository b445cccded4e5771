"""search: full-text index of message bodies (SQLite FTS5, PostgreSQL tsvector + GIN)

Existing messages are indexed here (FTS5 `rebuild`; PostgreSQL computes the generated
column for every row). Triggers keep the FTS5 table current in the transaction of
each write. Beware: a later SQLite batch migration that recreates `messages` drops
these triggers; such a migration must create them again (`_SQLITE_TRIGGERS`).

Revision ID: 0005_search
Revises: 0005_files
Create Date: 2026-11-30 07:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0005_search"
down_revision = "0005_files"
branch_labels = None
depends_on = None

# External content: the index holds no copy of the text, only its tokens; no stemming,
# diacritics kept, as PostgreSQL's `simple` configuration does.
_SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 0')"
)
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
    END""",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_SQLITE_TABLE)
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)
        op.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    else:
        op.execute(
            "ALTER TABLE messages ADD COLUMN search_vector tsvector"
            " GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED"
        )
        op.execute(
            "CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("messages_fts_update", "messages_fts_delete", "messages_fts_insert"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_messages_search_vector")
        op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector")
