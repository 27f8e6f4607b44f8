-- Each customer's standing, for the API's balance and entitlement checks: spend and
-- credits drawn per billing period (from rated_usage), credits granted and lapsed (from
-- credit_grants and credit_expiries, at period_start 1970-01-01: they belong to no
-- period) and hard caps reached per period (from alerts). A check reads one customer's
-- few rows of this one table instead of a period's minutes, so it costs the same on ten
-- rated rows or ten million. Exact before merges for the reasons in 005_analytics.sql;
-- read with sum().
CREATE TABLE IF NOT EXISTS customer_balances
(
    customer_id String,
    period_start DateTime('UTC'),
    events UInt64,
    revenue Decimal(38, 18),
    credits_applied Decimal(38, 18),
    billable_amount Decimal(38, 18),
    granted Decimal(38, 18),
    expired Decimal(38, 18),
    hard_caps UInt64
)
ENGINE = SummingMergeTree
ORDER BY (customer_id, period_start)
SETTINGS non_replicated_deduplication_window = 10000;

-- What was written before this migration, once: only while the table is still empty,
-- so a migration repeated after a crash does not count it twice. Like every migration,
-- run it before the flow writes, or the rows of a concurrent flush are missed.
INSERT INTO customer_balances
SELECT * FROM (
    SELECT customer_id, toDateTime(period_start, 'UTC') AS period_start, count() AS events,
        sum(amount - discount) AS revenue, sum(credits_applied) AS credits_applied,
        sum(billable_amount) AS billable_amount, toDecimal128(0, 18) AS granted,
        toDecimal128(0, 18) AS expired, toUInt64(0) AS hard_caps
    FROM rated_usage GROUP BY customer_id, period_start
    UNION ALL
    SELECT customer_id, toDateTime(0, 'UTC'), 0, 0, 0, 0, sum(amount), 0, 0
    FROM credit_grants GROUP BY customer_id
    UNION ALL
    SELECT customer_id, toDateTime(0, 'UTC'), 0, 0, 0, 0, 0, sum(amount), 0
    FROM credit_expiries GROUP BY customer_id
    UNION ALL
    SELECT customer_id, toDateTime(period_start, 'UTC'), 0, 0, 0, 0, 0, 0, count()
    FROM alerts WHERE kind = 'budget_hard_cap' GROUP BY customer_id, period_start
)
WHERE (SELECT count() FROM customer_balances) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_balances_rated_mv TO customer_balances AS
SELECT
    customer_id,
    toDateTime(period_start, 'UTC') AS period_start,
    count() AS events,
    sum(amount - discount) AS revenue,
    sum(credits_applied) AS credits_applied,
    sum(billable_amount) AS billable_amount
FROM rated_usage
GROUP BY customer_id, period_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_balances_grants_mv TO customer_balances AS
SELECT customer_id, toDateTime(0, 'UTC') AS period_start, sum(amount) AS granted
FROM credit_grants
GROUP BY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_balances_expiries_mv TO customer_balances AS
SELECT customer_id, toDateTime(0, 'UTC') AS period_start, sum(amount) AS expired
FROM credit_expiries
GROUP BY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_balances_alerts_mv TO customer_balances AS
SELECT customer_id, toDateTime(period_start, 'UTC') AS period_start, count() AS hard_caps
FROM alerts
WHERE kind = 'budget_hard_cap'
GROUP BY customer_id, period_start;
