"""Job leases: the pod running a job renews lease_expires_at; an expired lease means the pod is gone.

Revision ID: 0003_leases
Revises: 0002_calls
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_leases"
down_revision = "0002_calls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the lease column and the index the claim (status, FIFO order) and lease sweeps use."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at", "id"])


def downgrade() -> None:
    """Drop the lease column and its index."""
    op.drop_index("ix_jobs_status_created_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
