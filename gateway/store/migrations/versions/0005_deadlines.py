"""the customer's clock: received_at, deadline state, dossier time, evidence reuse, alerts

Revision ID: 0005
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "received_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="when the customer applied: the clock starts here",
            )
        )
        batch_op.add_column(
            sa.Column(
                "dossier_completed_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="when the dossier was complete (ready or rejected)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "closed_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="办结 or 不予受理: the clock stopped",
            )
        )
        batch_op.add_column(
            sa.Column(
                "deadline_state",
                sa.String(length=16),
                nullable=True,
                comment="as of the last evaluation (stage report or deadline job)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "due_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="as of the last evaluation",
            )
        )
    # Applications from before the clock: the customer applied when the request arrived.
    op.execute("UPDATE applications SET received_at = created_at WHERE received_at IS NULL")
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.alter_column(
            "received_at",
            existing_type=sa.DateTime(timezone=True),
            nullable=False,
            existing_comment="when the customer applied: the clock starts here",
        )
        batch_op.create_index(
            batch_op.f("ix_applications_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_applications_closed_at"), ["closed_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_applications_deadline_state"), ["deadline_state"], unique=False
        )
    with op.batch_alter_table("application_evidence", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reused",
                sa.Boolean(),
                nullable=True,
                comment=(
                    "true: taken from the evidence store; false: fetched for this application"
                ),
            )
        )
    op.create_table(
        "deadline_alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("threshold", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("application_id", "scope", "threshold"),
    )


def downgrade() -> None:
    op.drop_table("deadline_alerts")
    with op.batch_alter_table("application_evidence", schema=None) as batch_op:
        batch_op.drop_column("reused")
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_applications_deadline_state"))
        batch_op.drop_index(batch_op.f("ix_applications_closed_at"))
        batch_op.drop_index(batch_op.f("ix_applications_received_at"))
        batch_op.drop_column("due_at")
        batch_op.drop_column("deadline_state")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("dossier_completed_at")
        batch_op.drop_column("received_at")
