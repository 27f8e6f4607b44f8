-- Exactly-once inserts (sinks/writer.py): every flush is recorded in sink_blocks before
-- it is inserted with a deduplication token, and a recovery re-inserts the recorded
-- blocks with the same tokens. Each table, and each materialized view's target on its
-- own, remembers the tokens of its last 10,000 blocks and skips a block it already has.
CREATE TABLE IF NOT EXISTS sink_blocks
(
    target LowCardinality(String),
    token String,
    streams Array(String),
    firsts Array(UInt64),
    lasts Array(UInt64),
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (target, token)
TTL toDateTime(written_at) + INTERVAL 30 DAY;

ALTER TABLE raw_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE dead_letters MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE duplicates MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE rated_usage MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE late_adjustments MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE alerts MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE credit_grants MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE credit_expiries MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE revenue_daily MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE spend_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE alerts_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE outcomes_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
