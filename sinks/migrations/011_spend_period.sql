-- Spend and credits drawn per customer and billing period: the API's balance and
-- entitlement read one row per period (plus unmerged parts) instead of a period's
-- minutes in spend_minute, so a check costs the same on ten rows or ten million.
-- Exact before merges for the reasons in 005_analytics.sql; read with sum().
CREATE TABLE IF NOT EXISTS spend_period
(
    customer_id String,
    period_start DateTime('UTC'),
    events UInt64,
    revenue Decimal(38, 18),
    credits_applied Decimal(38, 18),
    billable_amount Decimal(38, 18)
)
ENGINE = SummingMergeTree
ORDER BY (customer_id, period_start)
SETTINGS non_replicated_deduplication_window = 10000;

-- Rows rated before this migration, once: only while the table is still empty, so a
-- migration repeated after a crash does not count them twice. Run migrations before
-- the flow writes (as every migration assumes), or rows of a concurrent flush are missed.
INSERT INTO spend_period
SELECT
    customer_id,
    toDateTime(period_start, 'UTC') AS period_start,
    count() AS events,
    sum(amount - discount) AS revenue,
    sum(credits_applied) AS credits_applied,
    sum(billable_amount) AS billable_amount
FROM rated_usage
WHERE (SELECT count() FROM spend_period) = 0
GROUP BY customer_id, period_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_period_mv TO spend_period AS
SELECT
    customer_id,
    toDateTime(period_start, 'UTC') AS period_start,
    count() AS events,
    sum(amount - discount) AS revenue,
    sum(credits_applied) AS credits_applied,
    sum(billable_amount) AS billable_amount
FROM rated_usage
GROUP BY customer_id, period_start;
