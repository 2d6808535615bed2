"""``ywtb keys rotate``: re-encrypt every personal field under the current key.

Runs beside the live connector: each value is rewritten with a conditional
UPDATE (only if it is still the value read), so a row changed meanwhile is
left to its writer, who already used the current key. Values written before
encryption existed are encrypted; missing blind indexes are filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Table, Text, and_, literal, select, type_coerce, update

from gateway.protect import EncryptedJSON, EncryptedText, KeyRing, is_token
from gateway.store.db import Sessions, transaction
from gateway.store.models import Application, Base, credential_index

BATCH = 500


@dataclass
class Rotated:
    column: str
    total: int = 0
    rewritten: int = 0


def encrypted_columns() -> list[tuple[Table, Column[object]]]:
    """Every encrypted column of the schema (found from the models, not listed by hand)."""
    return [
        (table, column)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, EncryptedText | EncryptedJSON)
    ]


def _reencrypted(ring: KeyRing, value: str, context: str) -> str:
    plain = ring.decrypt(value, context) if is_token(value) else value.encode("utf-8")
    return ring.encrypt(plain, context)


async def rotate(
    sessions: Sessions, ring: KeyRing, progress: Callable[[Rotated], None]
) -> list[Rotated]:
    """Rewrite each value not under the current key; report progress per batch."""
    results = []
    for table, column in encrypted_columns():
        context = column.type.context  # type: ignore[attr-defined]
        keys = list(table.primary_key.columns)
        raw = type_coerce(column, Text)
        state = Rotated(f"{table.name}.{column.name}")
        offset = 0
        while True:
            async with transaction(sessions) as session:
                rows = (
                    await session.execute(
                        select(*keys, raw)
                        .where(raw.is_not(None))
                        .order_by(*keys)
                        .offset(offset)
                        .limit(BATCH)
                    )
                ).all()
                for row in rows:
                    *ids, value = row
                    state.total += 1
                    if ring.is_current(value):
                        continue
                    result = await session.execute(
                        update(table)
                        .where(and_(*(k == v for k, v in zip(keys, ids, strict=True))))
                        .where(raw == literal(value, Text))
                        .values({column.name: literal(_reencrypted(ring, value, context), Text)})
                    )
                    state.rewritten += result.rowcount  # type: ignore[attr-defined]
            offset += len(rows)
            progress(state)
            if len(rows) < BATCH:
                break
        results.append(state)
    indexed = Rotated("applications.credential_index")
    async with transaction(sessions) as session:
        for application in await session.scalars(
            select(Application).where(Application.credential_index.is_(None))
        ):
            application.credential_index = credential_index(
                application.credential_type, application.credential_no
            )
            indexed.total += 1
            indexed.rewritten += 1
    progress(indexed)
    results.append(indexed)
    return results
