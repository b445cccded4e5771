"""audit: the log of what admins did, accounts an admin disabled, tasks by finish time

Revision ID: 0007_audit
Revises: 0007_task_queue
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_audit"
down_revision = "0007_task_queue"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        # The actor's id and name as they were (the row outlives a renamed or deleted user).
        sa.Column("actor_id", sa.BigInteger()),
        sa.Column("actor_name", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_kind", sa.String(16)),
        sa.Column("target", sa.String(200)),
        sa.Column("detail", sa.Text()),
        sa.Column("address", sa.String(64)),
    )
    op.create_index("ix_audit_log_actor", "audit_log", ["actor_name", "id"])
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"])
    op.create_index("ix_audit_log_target", "audit_log", ["target", "id"])
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    # The console's task throughput chart reads the last hour's finished tasks.
    op.create_index("ix_tasks_finished_at", "tasks", ["finished_at"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled")
    op.drop_index("ix_tasks_finished_at", table_name="tasks")
    op.drop_table("audit_log")
