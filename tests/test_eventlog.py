"""Event logs: generated traffic survives a file round trip; older logs read as the latest shape."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from fastavro import writer

from bench.loadgen import LoadSpec, generate
from schemas.eventlog import read_event_log, write_event_log
from schemas.serde import parsed_schema


def valid_records(count: int) -> list[dict[str, Any]]:
    sends, _ = generate(LoadSpec(count=count, start=datetime(2025, 6, 1, tzinfo=UTC), seed=3))
    return [send.record for send in sends if send.expect is None and not send.duplicate]


@pytest.mark.parametrize("codec", ["deflate", "null"])
def test_generated_records_round_trip(tmp_path: Path, codec: Literal["null", "deflate"]) -> None:
    records = valid_records(2000)
    path = tmp_path / "events.avro"
    assert write_event_log(path, (r for r in records), codec=codec) == len(records)
    assert list(read_event_log(path)) == records


def test_an_empty_log_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "empty.avro"
    assert write_event_log(path, []) == 0
    assert list(read_event_log(path)) == []


def test_a_log_written_under_contract_v1_reads_in_the_latest_shape(tmp_path: Path) -> None:
    records = valid_records(50)
    path = tmp_path / "v1.avro"
    with open(path, "wb") as out:
        writer(out, parsed_schema(1), records)
    assert list(read_event_log(path)) == [{**r, "region": None} for r in records]
