"""conversations: DMs, topics, archive, display names, edits, deletes, reactions,
read cursors, notification preferences and the notification inbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "notifications_read_upto", sa.BigInteger(), nullable=False, server_default="0"
            )
        )
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=8), nullable=False, server_default="room")
        )
        batch_op.add_column(sa.Column("topic", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("dm_key", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_rooms_dm_key", ["dm_key"])
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_to", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("edited_at", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "message_changes",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("room_id", BigId, sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "message_id",
            BigId,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at_seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("old_body", sa.Text(), nullable=True),
        sa.Column("new_body", sa.Text(), nullable=True),
        sa.Column("emoji", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_message_changes_room_at_seq", "message_changes", ["room_id", "at_seq"])
    op.create_index("ix_message_changes_message", "message_changes", ["message_id"])
    op.create_table(
        "reactions",
        sa.Column(
            "message_id",
            BigId,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("emoji", sa.String(length=64), primary_key=True),
        sa.Column(
            "user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "room_states",
        sa.Column(
            "room_id", BigId, sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("read_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("notify", sa.String(length=8), nullable=True),
    )
    op.create_index("ix_room_states_user", "room_states", ["user_id"])
    op.create_table(
        "notifications",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("room_id", BigId, sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.String(length=2000), nullable=True),
        sa.Column(
            "from_user_id", BigId, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_notifications_user_id", "notifications", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_user_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_room_states_user", table_name="room_states")
    op.drop_table("room_states")
    op.drop_table("reactions")
    op.drop_index("ix_message_changes_message", table_name="message_changes")
    op.drop_index("ix_message_changes_room_at_seq", table_name="message_changes")
    op.drop_table("message_changes")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("deleted")
        batch_op.drop_column("edited_at")
        batch_op.drop_column("reply_to")
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_constraint("uq_rooms_dm_key", type_="unique")
        batch_op.drop_column("dm_key")
        batch_op.drop_column("archived")
        batch_op.drop_column("topic")
        batch_op.drop_column("kind")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("notifications_read_upto")
        batch_op.drop_column("display_name")
