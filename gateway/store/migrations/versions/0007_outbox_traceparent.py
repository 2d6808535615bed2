"""outbox.traceparent: the W3C trace context each event carries onward

Revision ID: 0007
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = "0007"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "traceparent",
                sa.String(length=55),
                nullable=True,
                comment="W3C trace context of the transaction that wrote the event",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
