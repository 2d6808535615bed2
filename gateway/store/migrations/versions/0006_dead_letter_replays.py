"""dead-letter replays: who replayed which events, when, dry run or not, and each outcome

Revision ID: 0006
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letter_replays",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dead_letter_replay_items",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("replay_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("worker", sa.String(length=100), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("target_topic", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dead_letter_replay_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_dead_letter_replay_items_letter", ["worker", "event_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dead_letter_replay_items_replay_id"), ["replay_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dead_letter_replay_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letter_replay_items_replay_id"))
        batch_op.drop_index("ix_dead_letter_replay_items_letter")

    op.drop_table("dead_letter_replay_items")
    op.drop_table("dead_letter_replays")
