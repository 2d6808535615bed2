"""stage changes say when their push was first tracked

Revision ID: 0015
Revises: 0014

The sweeper looked for stage changes the ywtb-status worker never saw by an
anti-join of every stage change with the deliveries: a scan of the whole
history each round. A stage change now carries ``push_tracked_at``, set with
its first delivery row (or when it is recorded, if its application has no
一网通办 case: nothing to push), and a partial index holds only those still
unseen. Stage changes delivered, retrying or dead before this revision take
their delivery row's time; those without a case their own.
"""

import sqlalchemy as sa
from alembic import op


revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UNPUSHED = "push_tracked_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "push_tracked_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="when the ywtb-status worker first recorded its push (a delivery row), or "
                "when it was recorded if its application has no 一网通办 case; NULL: the "
                "sweeper's to drive",
            )
        )
    op.execute(
        "UPDATE stage_changes SET push_tracked_at = ("
        " SELECT min(d.updated_at) FROM deliveries d"
        " WHERE d.worker = 'ywtb-status' AND d.event_id = stage_changes.event_id)"
    )
    op.execute(  # nothing to push: no case
        "UPDATE stage_changes SET push_tracked_at = created_at WHERE push_tracked_at IS NULL"
        " AND NOT EXISTS"
        " (SELECT 1 FROM cases c WHERE c.application_id = stage_changes.application_id)"
    )
    op.create_index(
        "ix_stage_changes_unpushed",
        "stage_changes",
        ["application_id", "seq"],
        unique=False,
        postgresql_where=sa.text(UNPUSHED),
        sqlite_where=sa.text(UNPUSHED),
    )


def downgrade() -> None:
    op.drop_index("ix_stage_changes_unpushed", table_name="stage_changes")
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.drop_column("push_tracked_at")
