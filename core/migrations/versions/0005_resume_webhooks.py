"""Resume and retry links, the trainer's own status line, idempotency fingerprints, webhooks.

Revision ID: 0005_resume_webhooks
Revises: 0004_loss_history
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_resume_webhooks"
down_revision = "0004_loss_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the new job columns (all nullable, so old rows stay valid) and the calls' webhook column."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("resumed_from", sa.String(40), nullable=True))
        batch.add_column(sa.Column("retried_from", sa.String(40), nullable=True))
        batch.add_column(sa.Column("info", sa.String(512), nullable=True))
        batch.add_column(sa.Column("webhook", sa.JSON(), nullable=True))
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("webhook", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the columns again."""
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("webhook")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook")
        batch.drop_column("info")
        batch.drop_column("retried_from")
        batch.drop_column("resumed_from")
        batch.drop_column("request_hash")
