"""The idempotent sink against the real ClickHouse engine (chDB)."""

from datetime import UTC, datetime

from sinks.batch import SinkBatch
from sinks.clickhouse import connect, migrate
from sinks.tables import RAW_EVENTS
from sinks.writer import ClickHouseSink

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def raw_batch(stream: str, offsets: range) -> SinkBatch:
    batch = SinkBatch(stream)
    for offset in offsets:
        batch.add(
            RAW_EVENTS,
            (stream, offset, "usage", 0, offset, T0, "c1", b"\x00", 1, f"e{offset}", "c1", T0),
        )
    return batch


def test_migrations_apply_once(clickhouse_dsn: str, database: str) -> None:
    client = connect(clickhouse_dsn, database)
    assert migrate(client) == []
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert {"raw_events", "dead_letters", "duplicates", "schema_migrations"} <= tables


def test_replay_after_a_crash_writes_each_row_once(clickhouse_dsn: str, database: str) -> None:
    client = connect(clickhouse_dsn, database)
    sink = ClickHouseSink(lambda: client, flush_rows=1_000_000, flush_seconds=3600)

    first = sink.build_part("out", "clickhouse", None)
    first.write_batch([raw_batch("usage/0", range(0, 10))])
    snapshot = first.snapshot()
    first.write_batch([raw_batch("usage/0", range(10, 15))])
    first.flush()  # written, then the process dies before the next snapshot

    resumed = sink.build_part("out", "clickhouse", snapshot)
    resumed.write_batch([raw_batch("usage/0", range(10, 20))])
    resumed.close()

    rows = client.query(f"SELECT count(), uniqExact(offset), max(offset) FROM {RAW_EVENTS}")
    assert rows.result_rows == [(20, 20, 19)]


def test_a_restart_without_snapshot_skips_everything_already_written(
    clickhouse_dsn: str, database: str
) -> None:
    client = connect(clickhouse_dsn, database)
    sink = ClickHouseSink(lambda: client, flush_rows=1, flush_seconds=0)
    sink.build_part("out", "clickhouse", None).write_batch([raw_batch("usage/1", range(0, 5))])

    again = sink.build_part("out", "clickhouse", None)
    again.write_batch([raw_batch("usage/1", range(0, 8)), raw_batch("usage/2", range(0, 3))])
    again.close()

    rows = client.query(f"SELECT stream, count() FROM {RAW_EVENTS} GROUP BY stream ORDER BY stream")
    assert rows.result_rows == [("usage/1", 8), ("usage/2", 3)]
