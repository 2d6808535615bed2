"""applications.owner: the API client an application belongs to

Revision ID: 0008
Revises: 0003

Applications stored before owners existed belong to ``ywtb`` when they came
from a 一网通办 case, else to ``unknown`` (visible to clients with
``applications:all`` only).
"""

from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "owner",
                sa.String(length=100),
                nullable=True,
                comment="the API client that created it (ywtb: 一网通办 cases)",
            )
        )
    op.execute(
        "UPDATE applications SET owner = CASE WHEN id IN (SELECT application_id FROM cases) "
        "THEN 'ywtb' ELSE 'unknown' END"
    )
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.alter_column("owner", existing_type=sa.String(length=100), nullable=False)
        batch_op.create_index(batch_op.f("ix_applications_owner"), ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_applications_owner"))
        batch_op.drop_column("owner")
