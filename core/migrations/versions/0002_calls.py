"""The calls table of the RunPod-compatible routes.

Revision ID: 0002_calls
Revises: 0001_jobs
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_calls"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the calls table with the indexes status lookups, expiry and process links use."""
    op.create_table(
        "calls",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("process_id", sa.String(64), nullable=True),
        sa.Column("sync", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("execution_timeout_ms", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_calls_status", "calls", ["status"])
    op.create_index("ix_calls_process_id", "calls", ["process_id"])
    op.create_index("ix_calls_expires_at", "calls", ["expires_at"])


def downgrade() -> None:
    """Drop the calls table."""
    op.drop_index("ix_calls_expires_at", table_name="calls")
    op.drop_index("ix_calls_process_id", table_name="calls")
    op.drop_index("ix_calls_status", table_name="calls")
    op.drop_table("calls")
