"""webhooks: outgoing webhooks of bots, their outbox and delivery attempts

Revision ID: 0006_webhooks
Revises: 0005_search
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_webhooks"
down_revision = "0005_search"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "bot_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", sa.String(64), nullable=False),
        sa.Column("room_ids", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_by", BigId, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("disabled_at", sa.Float()),
        sa.Column("disabled_reason", sa.String(500)),
    )
    op.create_index("ix_webhooks_bot_id", "webhooks", ["bot_id"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("webhook_id", sa.BigInteger(), nullable=False),
        sa.Column("room_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("delivery_id", sa.String(32), nullable=False, unique=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float()),
        sa.Column("lease_owner", sa.String(64)),
    )
    op.create_index(
        "ix_webhook_outbox_order", "webhook_outbox", ["webhook_id", "room_id", "seq"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("webhook_id", sa.BigInteger(), nullable=False),
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("room_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer()),
        sa.Column("error", sa.String(500)),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_webhook_attempts_webhook", "webhook_attempts", ["webhook_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_outbox")
    op.drop_table("webhooks")
