"""personal data encrypted at rest, blind index, exchange log (audit_log)

Columns holding personal data become text that holds encrypted tokens
(gateway/protect.py). Rows written before stay readable as clear text until
``ywtb keys rotate`` encrypts them (it also fills ``credential_index``).

Revision ID: 0012
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = "0012"
down_revision = "0004"
branch_labels = None
depends_on = None

GENESIS = "0" * 64

#: (table, column, was JSON, nullable, comment)
ENCRYPTED = [
    ("outbox", "data", True, False, None),
    ("timeline", "data", True, False, None),
    ("applications", "request", True, False, "the validated request body"),
    ("applications", "credential_no", False, False, None),
    (
        "application_evidence",
        "record",
        True,
        True,
        "the evidence as checked for this application (a snapshot)",
    ),
    ("evidence", "fields", True, False, None),
    ("callbacks", "body", True, False, None),
    ("stage_changes", "handler", False, False, None),
]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_index("ix_applications_credential_no")
    for table, column, was_json, nullable, comment in ENCRYPTED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.JSON() if was_json else sa.String(),
                type_=sa.Text(),
                existing_nullable=nullable,
                existing_comment=comment,
                postgresql_using=f"{column}::text" if postgres else None,
            )
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "credential_index",
                sa.String(length=64),
                nullable=True,
                comment="blind index of credential_type:credential_no",
            )
        )
        batch_op.create_index(
            batch_op.f("ix_applications_credential_index"), ["credential_index"], unique=False
        )
    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "signed_request",
                sa.Text(),
                nullable=True,
                comment=(
                    "method, target, signing headers and raw body: "
                    "the callback can be verified again"
                ),
            )
        )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False, comment="API client or platform"),
        sa.Column("operation", sa.String(length=300), nullable=False),
        sa.Column(
            "subject", sa.String(length=64), nullable=True, comment="blind index of the person"
        ),
        sa.Column("purpose", sa.String(length=200), nullable=True, comment="application id or use"),
        sa.Column(
            "request_digest", sa.String(length=64), nullable=True, comment="SM3 of the request"
        ),
        sa.Column(
            "response_digest", sa.String(length=64), nullable=True, comment="SM3 of the answer"
        ),
        sa.Column("outcome", sa.String(length=200), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(sa.text(f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS}')"))
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False, comment="SM3 of the public key"),
        sa.Column(
            "signature",
            sa.String(length=300),
            nullable=False,
            comment="SM2-SM3 signature, DER hex",
        ),
        sa.PrimaryKeyConstraint("seq"),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_table("audit_log")
    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.drop_column("signed_request")
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_applications_credential_index"))
        batch_op.drop_column("credential_index")
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, column, was_json, nullable, comment in ENCRYPTED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.Text(),
                type_=sa.JSON() if was_json else sa.String(length=200),
                existing_nullable=nullable,
                existing_comment=comment,
                postgresql_using=(f"{column}::json" if postgres and was_json else None),
            )
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.create_index("ix_applications_credential_no", ["credential_no"], unique=False)
