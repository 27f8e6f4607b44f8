"""The exactly-once sink against the real ClickHouse engine (chDB)."""

import pickle
from datetime import UTC, datetime

import pytest

from sinks.batch import SinkBatch
from sinks.clickhouse import connect, migrate
from sinks.tables import DUPLICATES, RAW_EVENTS
from sinks.writer import BLOCKS, ClickHouseSink, token

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def raw_batch(stream: str, offsets: range) -> SinkBatch:
    n = len(offsets)
    batch = SinkBatch(stream)
    batch.add(
        RAW_EVENTS,
        {
            **source(stream, offsets),
            "kafka_timestamp": [T0] * n,
            "key": ["c1"] * n,
            "value": [b"\x00"] * n,
            "schema_id": [1] * n,
            "event_id": [f"e{offset}" for offset in offsets],
            "customer_id": ["c1"] * n,
            "received_at": [T0] * n,
        },
    )
    return batch


def duplicate_batch(stream: str, positions: range) -> SinkBatch:
    n = len(positions)
    batch = SinkBatch(stream)
    batch.add(
        DUPLICATES,
        {
            **source(stream, positions),
            "event_id": [f"e{p}" for p in positions],
            "customer_id": ["c1"] * n,
            "timestamp": [T0] * n,
            "first_seen_timestamp": [T0] * n,
            "fingerprint": [7] * n,
            "first_fingerprint": [7] * n,
            "conflicting": [False] * n,
        },
    )
    return batch


def source(stream: str, positions: range) -> dict[str, list[object]]:
    n = len(positions)
    return {
        "stream": [stream] * n,
        "position": list(positions),
        "topic": ["usage"] * n,
        "partition": [int(stream.split("/")[1]) if "/" in stream else 0] * n,
        "offset": list(positions),
    }


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
    first.close()  # written, then the process dies before the next snapshot

    resumed = sink.build_part("out", "clickhouse", snapshot)
    resumed.write_batch([raw_batch("usage/0", range(10, 20))])
    resumed.close()

    rows = client.query(f"SELECT count(), uniqExact(offset), max(offset) FROM {RAW_EVENTS}")
    assert rows.result_rows == [(20, 20, 19)]


@pytest.mark.parametrize(
    ("written", "replayed"),
    [
        ([range(10, 13), range(13, 15)], [range(10, 20)]),
        ([range(10, 15)], [range(10, 12), range(12, 20)]),
    ],
    ids=["written-in-two-batches", "replayed-in-two-batches"],
)
def test_a_block_replayed_in_other_batches_is_still_written_once(
    clickhouse_dsn: str, database: str, written: list[range], replayed: list[range]
) -> None:
    """ClickHouse's token names each Arrow batch of an insert (the same rows in two
    batches are two new blocks), and a replay reads Kafka in batches of its own size."""
    client = connect(clickhouse_dsn, database)
    sink = ClickHouseSink(lambda: client, flush_rows=1_000_000, flush_seconds=3600)
    first = sink.build_part("out", "clickhouse", None)
    first.write_batch([raw_batch("usage/0", range(0, 10))])
    snapshot = first.snapshot()
    first.write_batch([raw_batch("usage/0", offsets) for offsets in written])
    first.close()  # one block of rows 10..14, landed; then the process dies

    resumed = sink.build_part("out", "clickhouse", snapshot)
    for offsets in replayed:
        resumed.write_batch([raw_batch("usage/0", offsets)])
    resumed.close()

    rows = client.query(f"SELECT count(), uniqExact(offset), max(offset) FROM {RAW_EVENTS}")
    assert rows.result_rows == [(20, 20, 19)]


def test_a_snapshot_holds_the_rows_of_a_block_half_refilled(
    clickhouse_dsn: str, database: str
) -> None:
    """A block recorded but never inserted (the kill came between the two), refilled by
    a replay that reaches a snapshot with one stream's rows in and the other's not: a
    second crash there must not lose the rows the block already took, since no replay
    from that snapshot brings them again."""
    client = connect(clickhouse_dsn, database)
    ranges = {"usage/0": (0, 9), "usage/1": (0, 9)}
    client.insert(
        BLOCKS,
        [[RAW_EVENTS, token(RAW_EVENTS, ranges), list(ranges), [0, 0], [9, 9]]],
        column_names=["target", "token", "streams", "firsts", "lasts"],
    )
    sink = ClickHouseSink(lambda: client, flush_rows=1_000_000, flush_seconds=3600)
    refilling = sink.build_part("out", "clickhouse", None)
    refilling.write_batch([raw_batch("usage/0", range(0, 10))])
    snapshot = pickle.loads(pickle.dumps(refilling.snapshot()))  # then the second crash

    resumed = sink.build_part("out", "clickhouse", snapshot)
    resumed.write_batch([raw_batch("usage/1", range(0, 10)), raw_batch("usage/0", range(10, 15))])
    resumed.close()

    rows = client.query(
        f"SELECT stream, count(), uniqExact(offset) FROM {RAW_EVENTS} GROUP BY ALL ORDER BY stream"
    )
    assert rows.result_rows == [("usage/0", 15, 15), ("usage/1", 10, 10)]


def test_a_snapshot_holds_the_flushes_still_in_flight(clickhouse_dsn: str, database: str) -> None:
    """A snapshot does not wait for its inserts. Here they land nowhere the resumed
    partition can see (another database: the process died before they ran); the resume
    inserts them, then the replay's rows after the snapshot, each row once."""
    lost = connect(clickhouse_dsn, f"{database}_lost")
    first = ClickHouseSink(lambda: lost, flush_rows=1_000_000, flush_seconds=3600)
    part = first.build_part("out", "clickhouse", None)
    part.write_batch([raw_batch("usage/0", range(0, 10)), duplicate_batch("shard-0", range(0, 4))])
    snapshot = pickle.loads(pickle.dumps(part.snapshot()))
    part.close()

    client = connect(clickhouse_dsn, database)
    sink = ClickHouseSink(lambda: client, flush_rows=1_000_000, flush_seconds=3600)
    resumed = sink.build_part("out", "clickhouse", snapshot)
    resumed.write_batch([raw_batch("usage/0", range(10, 15))])
    resumed.close()

    rows = client.query(f"SELECT count(), uniqExact(offset), max(offset) FROM {RAW_EVENTS}")
    assert rows.result_rows == [(15, 15, 14)]
    duplicates = client.query(f"SELECT groupArray(position) FROM {DUPLICATES}").result_rows
    assert sorted(duplicates[0][0]) == [0, 1, 2, 3]


def test_a_restart_without_snapshot_skips_everything_already_written(
    clickhouse_dsn: str, database: str
) -> None:
    client = connect(clickhouse_dsn, database)
    sink = ClickHouseSink(lambda: client, flush_rows=1, flush_seconds=0)
    first = sink.build_part("out", "clickhouse", None)
    first.write_batch([raw_batch("usage/1", range(0, 5))])
    first.close()  # in ClickHouse, then the process dies

    again = sink.build_part("out", "clickhouse", None)
    again.write_batch([raw_batch("usage/1", range(0, 8)), raw_batch("usage/2", range(0, 3))])
    again.close()

    rows = client.query(f"SELECT stream, count() FROM {RAW_EVENTS} GROUP BY stream ORDER BY stream")
    assert rows.result_rows == [("usage/1", 8), ("usage/2", 3)]


def test_a_view_that_missed_an_insert_before_a_crash_gets_it_on_resume(
    clickhouse_dsn: str, database: str
) -> None:
    """A kill between a table's part and its views' parts leaves the table ahead of its
    views; the resumed sink re-inserts the recorded block and only the view takes it."""
    client = connect(clickhouse_dsn, database)
    sink = ClickHouseSink(lambda: client, flush_rows=1_000_000, flush_seconds=3600)
    first = sink.build_part("out", "clickhouse", None)
    first.write_batch([duplicate_batch("shard-0", range(0, 10))])
    snapshot = first.snapshot()
    first.write_batch([duplicate_batch("shard-0", range(10, 20))])
    client.command("DETACH TABLE outcomes_duplicates_mv")
    first.close()  # the table has rows 10..19, the view does not: then the process dies
    client.command("ATTACH TABLE outcomes_duplicates_mv")

    resumed = sink.build_part("out", "clickhouse", snapshot)
    resumed.write_batch([duplicate_batch("shard-0", range(10, 26))])
    resumed.close()

    table = client.query(f"SELECT count(), uniqExact(position) FROM {DUPLICATES}").result_rows
    view = client.query(
        "SELECT sum(events) FROM outcomes_minute WHERE outcome = 'duplicate'"
    ).result_rows
    assert table == [(26, 26)]
    assert view == [(26,)]


def test_partitions_each_write_and_recover_only_their_own_streams(
    clickhouse_dsn: str, database: str
) -> None:
    """Against a server the sink has a partition per worker: each stream has one writer,
    and a partition resuming after a crash redoes its own blocks, not another's."""
    client = connect(clickhouse_dsn, database)
    sink = ClickHouseSink(lambda: client, flush_rows=1_000_000, flush_seconds=3600, partitions=2)
    parts = sink.list_parts()
    streams = [f"usage/{p}" for p in range(8)]
    owner = {stream: parts[sink.part_fn(stream)] for stream in streams}
    assert set(owner.values()) == set(parts)
    built = {part: sink.build_part("out", part, None) for part in parts}
    for stream in streams:
        built[owner[stream]].write_batch([raw_batch(stream, range(0, 10))])
    snapshots = {part: p.snapshot() for part, p in built.items()}
    crashed = parts[0]
    for stream in streams:
        built[owner[stream]].write_batch([raw_batch(stream, range(10, 15))])
    built[crashed].close()  # written, then its worker dies before the next snapshot
    built[parts[1]].close()

    resumed = sink.build_part("out", crashed, snapshots[crashed])
    for stream in streams:
        if owner[stream] == crashed:
            resumed.write_batch([raw_batch(stream, range(10, 20))])
    resumed.close()

    rows = client.query(
        f"SELECT stream, count(), uniqExact(offset) FROM {RAW_EVENTS} GROUP BY stream"
    ).result_rows
    expected = {s: 20 if owner[s] == crashed else 15 for s in streams}
    assert {stream: (n, unique) for stream, n, unique in rows} == {
        s: (n, n) for s, n in expected.items()
    }
