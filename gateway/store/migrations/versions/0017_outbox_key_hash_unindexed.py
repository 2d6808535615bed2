"""the outbox's key hash is not indexed: no query can use that index

Revision ID: 0017
Revises: 0016

The relay selects its lanes by ``key_hash % lanes``, which an index on
``key_hash`` cannot serve, and nothing else looks rows up by it. The index only
cost every event written and every row marked sent one more index entry (a
marking is never a HOT update: ``sent_at`` is in the predicate of
``ix_outbox_unsent``).
"""

from alembic import op


revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outbox_key_hash", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_key_hash", "outbox", ["key_hash"], unique=False)
