-- Analytics for Grafana: materialized views that roll rated rows up as they are inserted.
--
-- Why these roll-ups are exact. OpenMeter and Lago learned that a materialized view
-- aggregating raw events counts every replayed or re-sent copy before any merge can
-- collapse it: ReplacingMergeTree on the source table deduplicates only the table's
-- own parts, later, while the view has already added the copy to its target. Here
-- both kinds of copy are stopped before ClickHouse: re-sent events are recognised by
-- the dedupe window and go to `duplicates`, never to `rated_usage`; and the sink
-- (sinks/writer.py) inserts each (stream, position) exactly once even across crash
-- recovery, so every view below sees every row once.
--
-- Why they are exact before merges. Targets are SummingMergeTree or AggregatingMergeTree
-- and every query reads them with sum(), sumMap() or max() GROUP BY, never a bare column, so
-- unmerged parts add up to the same totals as merged ones. Map columns are
-- SimpleAggregateFunction(sumMap, ...): SummingMergeTree keeps one row's Map when it
-- merges instead of adding them by key.
--
-- Keys: customer first, then time, because every dashboard filters on $customer and
-- the time range. Money stays Decimal(38, 18), summed exactly; one price book has one
-- currency, so there is no currency key.
--
-- Views see only rows inserted after they exist; migrations run before the flow writes.

-- (a) Usage and spend per customer, model and meter, per minute of event time.
CREATE TABLE IF NOT EXISTS usage_minute
(
    customer_id String,
    minute DateTime('UTC'),
    model LowCardinality(String),
    meter LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    quantities SimpleAggregateFunction(sumMap, Map(String, UInt64)),
    amounts SimpleAggregateFunction(sumMap, Map(String, Decimal(38, 18))),
    amount SimpleAggregateFunction(sum, Decimal(38, 18)),
    discount SimpleAggregateFunction(sum, Decimal(38, 18)),
    credits_applied SimpleAggregateFunction(sum, Decimal(38, 18)),
    billable_amount SimpleAggregateFunction(sum, Decimal(38, 18)),
    cost SimpleAggregateFunction(sum, Decimal(38, 18)),
    margin SimpleAggregateFunction(sum, Decimal(38, 18))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (customer_id, minute, model, meter);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_minute_mv TO usage_minute AS
SELECT
    customer_id,
    toStartOfMinute(timestamp) AS minute,
    model,
    meter,
    count() AS events,
    sumMap(CAST(quantities, 'Map(String, UInt64)')) AS quantities,
    sumMap(CAST(amounts, 'Map(String, Decimal(38, 18))')) AS amounts,
    sum(amount) AS amount,
    sum(discount) AS discount,
    sum(credits_applied) AS credits_applied,
    sum(billable_amount) AS billable_amount,
    sum(cost) AS cost,
    sum(margin) AS margin
FROM rated_usage
GROUP BY customer_id, minute, model, meter;

-- (b) Daily revenue (amount - discount), billable, credits, cost and margin per customer,
-- model and feature ('' where the event named none).
CREATE TABLE IF NOT EXISTS revenue_daily
(
    customer_id String,
    day Date,
    model LowCardinality(String),
    feature LowCardinality(String),
    events UInt64,
    revenue Decimal(38, 18),
    billable_amount Decimal(38, 18),
    credits_applied Decimal(38, 18),
    cost Decimal(38, 18),
    margin Decimal(38, 18)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (customer_id, day, model, feature);

CREATE MATERIALIZED VIEW IF NOT EXISTS revenue_daily_mv TO revenue_daily AS
SELECT
    customer_id,
    toDate(timestamp) AS day,
    model,
    ifNull(feature, '') AS feature,
    count() AS events,
    sum(amount - discount) AS revenue,
    sum(billable_amount) AS billable_amount,
    sum(credits_applied) AS credits_applied,
    sum(cost) AS cost,
    sum(margin) AS margin
FROM rated_usage
GROUP BY customer_id, day, model, feature;

-- (c) Spend and credit consumption per customer and billing period, per minute: the
-- dashboards take a running sum over it (budgets count billable, after credits).
-- `events` also keeps minutes of free usage: SummingMergeTree drops all-zero rows.
CREATE TABLE IF NOT EXISTS spend_minute
(
    customer_id String,
    minute DateTime('UTC'),
    period_start DateTime('UTC'),
    events UInt64,
    revenue Decimal(38, 18),
    credits_applied Decimal(38, 18),
    billable_amount Decimal(38, 18)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (customer_id, minute, period_start);

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_minute_mv TO spend_minute AS
SELECT
    customer_id,
    toStartOfMinute(timestamp) AS minute,
    toDateTime(period_start, 'UTC') AS period_start,
    count() AS events,
    sum(amount - discount) AS revenue,
    sum(credits_applied) AS credits_applied,
    sum(billable_amount) AS billable_amount
FROM rated_usage
GROUP BY customer_id, minute, period_start;

-- (c) Credit and budget alerts per customer and kind, per minute of the usage that
-- crossed the threshold, with the highest threshold and value reached in it.
CREATE TABLE IF NOT EXISTS alerts_minute
(
    customer_id String,
    minute DateTime('UTC'),
    kind LowCardinality(String),
    alerts SimpleAggregateFunction(sum, UInt64),
    threshold SimpleAggregateFunction(max, Decimal(38, 18)),
    value SimpleAggregateFunction(max, Decimal(38, 18))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (customer_id, minute, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_minute_mv TO alerts_minute AS
SELECT
    customer_id,
    toStartOfMinute(at) AS minute,
    kind,
    count() AS alerts,
    max(threshold) AS threshold,
    max(value) AS value
FROM alerts
GROUP BY customer_id, minute, kind;

-- (d) What became of consumed events, per minute: rated, late, adjustment, duplicate,
-- dead_letter (with its reason). Rated rows and dead letters count at their Kafka
-- timestamp; a duplicate row records no Kafka time, so it counts at its event time
-- (re-sends follow the original within minutes). customer_id is '' where unknown.
CREATE TABLE IF NOT EXISTS outcomes_minute
(
    customer_id String,
    minute DateTime('UTC'),
    outcome LowCardinality(String),
    reason LowCardinality(String),
    events UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (customer_id, minute, outcome, reason);

CREATE MATERIALIZED VIEW IF NOT EXISTS outcomes_rated_mv TO outcomes_minute AS
SELECT
    customer_id,
    toStartOfMinute(kafka_timestamp) AS minute,
    multiIf(adjustment, 'adjustment', late, 'late', 'rated') AS outcome,
    '' AS reason,
    count() AS events
FROM rated_usage
GROUP BY customer_id, minute, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS outcomes_duplicates_mv TO outcomes_minute AS
SELECT
    customer_id,
    toStartOfMinute(timestamp) AS minute,
    'duplicate' AS outcome,
    '' AS reason,
    count() AS events
FROM duplicates
GROUP BY customer_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS outcomes_dead_letters_mv TO outcomes_minute AS
SELECT
    ifNull(customer_id, '') AS customer_id,
    toStartOfMinute(kafka_timestamp) AS minute,
    'dead_letter' AS outcome,
    reason,
    count() AS events
FROM dead_letters
GROUP BY customer_id, minute, reason;
