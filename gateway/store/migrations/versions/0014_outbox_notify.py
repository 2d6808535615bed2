"""committed outbox rows wake the relays (PostgreSQL NOTIFY from a statement trigger)

Revision ID: 0014
Revises: 0013

Every statement that inserts outbox rows raises ``NOTIFY ywtb_outbox``
(``gateway.outbox.CHANNEL``); PostgreSQL delivers it when the transaction
commits, once however many rows or statements, and never for a rollback. A
trigger rather than a statement sent by the application: no extra round trip,
and bulk inserts are covered too. SQLite has no NOTIFY: there the relays of the
same process are woken in process and others poll.
"""

from alembic import op


revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION ywtb_outbox_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('ywtb_outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION ywtb_outbox_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS ywtb_outbox_notify()")
