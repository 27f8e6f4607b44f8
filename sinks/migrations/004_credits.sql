-- Prepaid credit grants as applied by the flow, and what lapsed unused at expiry.
CREATE TABLE IF NOT EXISTS credit_grants
(
    stream LowCardinality(String),
    position UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    grant_id String,
    customer_id String,
    credits Decimal(38, 18),
    effective_at DateTime64(6, 'UTC'),
    expires_at Nullable(DateTime64(6, 'UTC'))
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, grant_id);

CREATE TABLE IF NOT EXISTS credit_expiries
(
    stream LowCardinality(String),
    position UInt64,
    grant_id String,
    customer_id String,
    expires_at DateTime64(6, 'UTC'),
    credits Decimal(38, 18),
    amount Decimal(38, 18)
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, grant_id);
