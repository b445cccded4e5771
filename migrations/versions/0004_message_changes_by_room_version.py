"""message_changes: index (room_id, id) for resuming and recovering changes by version

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 05:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `join ... changes_after` and the hub's periodic check read a room's changes by id.
    op.create_index("ix_message_changes_room_id", "message_changes", ["room_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_message_changes_room_id", table_name="message_changes")
