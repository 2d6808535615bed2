"""The exchange log's chain and its offline export verification (no store, no sockets)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.audit import (
    EXPORT_FORMAT,
    GENESIS,
    ChainWalk,
    Problem,
    chain_hash,
    sign_checkpoint,
    verify_export,
)
from gateway.settings import SANDBOX_AUDIT_PRIVATE_KEY, SANDBOX_AUDIT_PUBLIC_KEY

OTHER_PRIVATE = "28183740b9f43d0740e893096bbb477e721962bf35b85c6ef48a197c6ad03376"


def chain(n: int, first_seq: int = 1, prev: str = GENESIS) -> list[dict[str, Any]]:
    records = []
    for seq in range(first_seq, first_seq + n):
        record: dict[str, Any] = {
            "seq": seq,
            "time": f"2026-11-26T09:00:{seq % 60:02d}+00:00",
            "actor": "licence",
            "operation": "POST /licence",
            "subject": None,
            "purpose": "platform call",
            "request_digest": "ab" * 32,
            "response_digest": "cd" * 32,
            "outcome": "http 200",
            "duration_ms": seq,
        }
        record["prev_hash"] = prev
        record["hash"] = prev = chain_hash(record, prev)
        records.append(record)
    return records


def walk(records: list[dict[str, Any]]) -> Problem | None:
    walker = ChainWalk(records[0]["seq"], records[0]["prev_hash"])
    for record in records:
        if (problem := walker.step(record)) is not None:
            return problem
    return None


def test_an_intact_chain_walks_clean() -> None:
    assert walk(chain(10)) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("outcome", "http 500"), ("actor", "licencf"), ("duration_ms", 99), ("hash", "0" * 64)],
)
def test_a_modified_record_is_named_by_its_seq(field: str, value: object) -> None:
    records = chain(10)
    records[6][field] = value

    problem = walk(records)

    assert problem is not None and problem.seq == 7


def test_a_record_rehashed_after_modification_breaks_the_next_link() -> None:
    records = chain(10)
    records[3]["outcome"] = "http 500"
    records[3]["hash"] = chain_hash(records[3], records[3]["prev_hash"])

    problem = walk(records)

    assert problem is not None and problem.seq == 5


def test_a_deleted_record_is_named_by_its_seq() -> None:
    records = chain(10)
    del records[4]

    problem = walk(records)

    assert problem is not None and problem.seq == 5 and "missing" in problem.reason


def test_reordered_records_are_named() -> None:
    records = chain(10)
    records[2], records[3] = records[3], records[2]
    records[2]["seq"], records[3]["seq"] = 3, 4

    problem = walk(records)

    assert problem is not None and problem.seq == 3


def export(records: list[dict[str, Any]], signed_by: str = SANDBOX_AUDIT_PRIVATE_KEY) -> list[Any]:
    last = records[-1]
    return [
        {"type": "header", "format": EXPORT_FORMAT, "public_key": SANDBOX_AUDIT_PUBLIC_KEY},
        *({"type": "record", **r} for r in records),
        {
            "type": "checkpoint",
            "seq": last["seq"],
            "hash": last["hash"],
            "signature": sign_checkpoint(signed_by, last["seq"], last["hash"]),
        },
    ]


def test_an_export_verifies_offline_from_the_middle_of_the_chain() -> None:
    records = chain(30)[10:]

    assert verify_export(export(records)) is None
    assert verify_export(export(records), SANDBOX_AUDIT_PUBLIC_KEY) is None


def test_an_export_with_a_changed_record_fails_naming_it() -> None:
    lines = export(chain(20))
    lines[8]["purpose"] = "other"

    problem = verify_export(lines)

    assert problem is not None and problem.seq == 8


def test_an_export_rewritten_consistently_fails_on_the_signature() -> None:
    records = chain(20)
    forged = copy.deepcopy(records)
    forged[10]["outcome"] = "http 500"
    for i in range(10, 20):  # rehash from the change on: the chain is consistent again
        forged[i]["prev_hash"] = forged[i - 1]["hash"]
        forged[i]["hash"] = chain_hash(forged[i], forged[i]["prev_hash"])
    lines = export(forged, signed_by=OTHER_PRIVATE)  # not the connector's key
    lines[-1]["hash"] = forged[-1]["hash"]

    problem = verify_export(lines)

    assert problem is not None and problem.seq == 20 and "signature" in problem.reason


def test_an_export_whose_tail_is_not_signed_is_refused() -> None:
    lines = export(chain(10))
    lines.insert(-1, {"type": "record", **chain(11)[-1]})

    problem = verify_export(lines)

    assert problem is not None and problem.seq == 11
