"""indexes for the sweeper's open-work queries

Revision ID: 0013
Revises: 0012

The sweeper finds the events of open work through ``outbox.subject`` (the
application of a ``received`` event, the permit of a ``requested`` one), the
permits still to file by ``permits.status`` and the deliveries being retried by
``deliveries.status``; without these indexes each of its rounds read the whole
table (tests/integration/test_query_plans.py).
"""

from alembic import op


revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: (table, column) of each new index, named ix_<table>_<column> like the models' own.
INDEXES = [("outbox", "subject"), ("permits", "status"), ("deliveries", "status")]


def upgrade() -> None:
    for table, column in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
