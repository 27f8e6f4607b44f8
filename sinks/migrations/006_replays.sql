-- Event logs re-rated with chosen books (reports/replay.py): each replay is a named result
-- set beside the live rated_usage, never mixed into it, with its event and money columns;
-- (topic, partition, offset) say where the event was read (a file: its name, 0, index).
-- One partition per replay: a re-run drops the replay's partition, then inserts, so a
-- name always holds exactly one run's rows; ReplacingMergeTree on the event's identity
-- guards against a row inserted twice by hand.
CREATE TABLE IF NOT EXISTS replayed_usage
ENGINE = ReplacingMergeTree
PARTITION BY replay
ORDER BY (replay, customer_id, event_id)
AS SELECT
    toLowCardinality('') AS replay,
    * EXCEPT (stream, position, late, lateness_ms, adjustment, kafka_timestamp, rated_at)
FROM rated_usage
WHERE 0;

-- One row per replay name, the latest run's: written when it starts (finished_at NULL)
-- and again when its rows are all in, so an interrupted run is visible as unfinished.
-- The scope (topic and [first, end) offsets per partition, or the event-time span of a
-- file) is what the diff compares with the live rated_usage.
CREATE TABLE IF NOT EXISTS replays
(
    name String,
    source String,
    prices String,
    contracts String,
    costs String,
    started_at DateTime64(6, 'UTC'),
    finished_at Nullable(DateTime64(6, 'UTC')),
    events UInt64,
    rated UInt64,
    duplicates UInt64,
    rejected Map(LowCardinality(String), UInt64),
    topic String,
    ranges Array(Tuple(UInt16, UInt64, UInt64)),
    first_event Nullable(DateTime64(6, 'UTC')),
    last_event Nullable(DateTime64(6, 'UTC'))
)
ENGINE = ReplacingMergeTree(started_at)
ORDER BY name;
