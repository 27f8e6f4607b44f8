-- Records that never became rated usage, each with a reason a person can act on.
-- payload: the raw Kafka value for decode failures, the event as JSON for later stages.
CREATE TABLE IF NOT EXISTS dead_letters
(
    stream LowCardinality(String),
    position UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    reason LowCardinality(String),
    detail String,
    event_id Nullable(String),
    customer_id Nullable(String),
    payload String CODEC(ZSTD(3)),
    kafka_timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset);

-- Re-sent events recognised inside the dedupe horizon: counted here, never rated twice.
CREATE TABLE IF NOT EXISTS duplicates
(
    stream LowCardinality(String),
    position UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    event_id String,
    customer_id String,
    timestamp DateTime64(6, 'UTC'),
    first_seen_timestamp DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset);
