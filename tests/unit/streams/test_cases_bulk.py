"""The bulk INSERT statements of the case store on PostgreSQL (the SQL they build)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, MetaData, Table
from sqlalchemy.types import JSON

from streams.cases import bulk
from streams.cases.store import analysis_results, cases, outbox


def test_one_array_parameter_per_column_with_its_type() -> None:
    sql = bulk.statement(outbox, ["topic", "key", "created_at", "result_key"])
    assert sql == (
        'INSERT INTO outbox ("topic", "key", "created_at", "result_key") SELECT * FROM '
        "unnest($1::text[], $2::bytea[], $3::timestamptz[], $4::text[]) "
    )
    typed = bulk.statement(analysis_results, ["case_version", "overall_score", "passed"])
    assert "$1::int4[], $2::float8[], $3::bool[]" in typed


def test_conflict_clauses() -> None:
    update = bulk.do_update(["case_id"], ["case_id", "version", "updated_at"])
    assert update == (
        'ON CONFLICT (case_id) DO UPDATE SET "version" = EXCLUDED."version", '
        '"updated_at" = EXCLUDED."updated_at"'
    )
    sql = bulk.statement(cases, ["case_id", "version"], update)
    assert sql.endswith(update)
    assert bulk.do_nothing(["idempotency_key"]) == "ON CONFLICT (idempotency_key) DO NOTHING"


def test_a_column_type_without_a_bulk_type_is_refused() -> None:
    table = Table("odd", MetaData(), Column("doc", JSON))
    with pytest.raises(TypeError, match=r"odd\.doc"):
        bulk.statement(table, ["doc"])
