"""sweep items (unfinished work the sweeper drives); idempotency keys for every operation

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweep_items",
        sa.Column("worker", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker", "event_id"),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=32), server_default="applications", nullable=False)
        )
        batch_op.add_column(sa.Column("resource_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("resource_id")
        batch_op.drop_column("scope")
    op.drop_table("sweep_items")
