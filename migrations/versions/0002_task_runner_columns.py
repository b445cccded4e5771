"""task runner columns: worker, heartbeat, updated_at, cancel_requested

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default="0")
        )
        batch_op.create_index(batch_op.f("ix_tasks_started_by"), ["started_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_started_by"))
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("worker")
