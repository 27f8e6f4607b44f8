-- Usage of customers not (yet) in the catalogue, held in the shard's state rather than
-- dead-lettered. One 'parked' row when an event is held, one 'released' row when its
-- customer appears and it is rated (its rated_usage row has the same topic, partition and
-- offset), or one 'expired' row when it passed the bound (count or age) and was
-- dead-lettered as unknown_customer. Held now: parked without a second row.
CREATE TABLE IF NOT EXISTS parked_usage
(
    stream LowCardinality(String),
    position UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    action LowCardinality(String),
    event_id String,
    customer_id String,
    timestamp DateTime64(6, 'UTC'),
    kafka_timestamp DateTime64(3, 'UTC'),
    at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset, action)
SETTINGS non_replicated_deduplication_window = 10000;
