-- The audit trail: every consumed Kafka record, as received, whatever became of it.
-- Keyed by its Kafka coordinates, so a replay after recovery rewrites the same key
-- and ReplacingMergeTree (or FINAL) keeps one copy.
CREATE TABLE IF NOT EXISTS raw_events
(
    stream LowCardinality(String),
    position UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    kafka_timestamp DateTime64(3, 'UTC'),
    key Nullable(String),
    value String CODEC(ZSTD(3)),
    schema_id Nullable(UInt32),
    event_id Nullable(String),
    customer_id Nullable(String),
    received_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset);
