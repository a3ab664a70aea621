"""The job_metrics table: one downsampled loss series per job.

Revision ID: 0004_loss_history
Revises: 0003_leases
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_loss_history"
down_revision = "0003_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create job_metrics; a job's series goes with the job (ON DELETE CASCADE)."""
    op.create_table(
        "job_metrics",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stride", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop job_metrics."""
    op.drop_table("job_metrics")
