-- One row per counted event: quantities, prices, money and the versions that priced it.
-- Money is Decimal(38, 18): rating quantizes cumulative amounts to 1e-18 and each
-- row holds the difference, so sums are exact to the last digit in any order.
-- The sink inserts each row once (see sinks/writer.py), so plain sum() is exact;
-- ReplacingMergeTree on the event's identity is a second guard, should anyone
-- insert by hand.
CREATE TABLE IF NOT EXISTS rated_usage
(
    stream LowCardinality(String),
    position UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    event_id String,
    customer_id String,
    timestamp DateTime64(6, 'UTC'),
    period_start DateTime64(3, 'UTC'),
    meter LowCardinality(String),
    model LowCardinality(String),
    provider LowCardinality(String),
    mode LowCardinality(String),
    project_id Nullable(String),
    feature Nullable(String),
    quantities Map(LowCardinality(String), UInt64),
    unit_prices Map(LowCardinality(String), Decimal(38, 18)),
    amounts Map(LowCardinality(String), Decimal(38, 18)),
    tiers Array(String),
    amount Decimal(38, 18),
    discount Decimal(38, 18),
    credits_applied Decimal(38, 18),
    billable_amount Decimal(38, 18),
    cost Decimal(38, 18),
    margin Decimal(38, 18),
    currency LowCardinality(String),
    price_version LowCardinality(String),
    contract_version LowCardinality(Nullable(String)),
    cost_version LowCardinality(Nullable(String)),
    late Bool,
    lateness_ms UInt64,
    adjustment Bool,
    kafka_timestamp DateTime64(3, 'UTC'),
    rated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, meter, model, event_id);

-- Late events whose billing period had closed: billed on the next statement.
CREATE TABLE IF NOT EXISTS late_adjustments
(
    stream LowCardinality(String),
    position UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    event_id String,
    customer_id String,
    timestamp DateTime64(6, 'UTC'),
    original_period_start DateTime64(3, 'UTC'),
    meter LowCardinality(String),
    model LowCardinality(String),
    amount Decimal(38, 18),
    discount Decimal(38, 18),
    credits_applied Decimal(38, 18),
    billable_amount Decimal(38, 18),
    cost Decimal(38, 18),
    currency LowCardinality(String),
    lateness_ms UInt64,
    watermark DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, event_id);

-- Credit and budget alerts; ids are deterministic, so a replay repeats the same id.
CREATE TABLE IF NOT EXISTS alerts
(
    stream LowCardinality(String),
    position UInt64,
    alert_id String,
    customer_id String,
    kind LowCardinality(String),
    threshold Decimal(38, 18),
    value Decimal(38, 18),
    period_start DateTime64(3, 'UTC'),
    at DateTime64(6, 'UTC'),
    grant_id Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, alert_id);
