-- Each rated row's amount broken down by charge kind (band_fee, package, percentage,
-- transaction_fee, dynamic: parts of `amount` not priced per unit, before pooled
-- allowances, discount and credits), and on a correction the event_id it corrects.
-- Rows written before this migration have neither.
ALTER TABLE rated_usage ADD COLUMN IF NOT EXISTS charges Map(LowCardinality(String), Decimal(38, 18));
ALTER TABLE rated_usage ADD COLUMN IF NOT EXISTS corrects Nullable(String);
ALTER TABLE replayed_usage ADD COLUMN IF NOT EXISTS charges Map(LowCardinality(String), Decimal(38, 18));
ALTER TABLE replayed_usage ADD COLUMN IF NOT EXISTS corrects Nullable(String);

-- A correction's quantities are signed deltas, so quantities become signed wherever they
-- are kept (no stored quantity exceeds 10^15, so every existing value converts as it is).
ALTER TABLE rated_usage MODIFY COLUMN quantities Map(LowCardinality(String), Int64);
ALTER TABLE replayed_usage MODIFY COLUMN quantities Map(LowCardinality(String), Int64);
ALTER TABLE usage_minute MODIFY COLUMN quantities SimpleAggregateFunction(sumMap, Map(String, Int64));

DROP TABLE IF EXISTS usage_minute_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_minute_mv TO usage_minute AS
SELECT
    customer_id,
    toStartOfMinute(timestamp) AS minute,
    model,
    meter,
    count() AS events,
    sumMap(CAST(quantities, 'Map(String, Int64)')) AS quantities,
    sumMap(CAST(amounts, 'Map(String, Decimal(38, 18))')) AS amounts,
    sum(amount) AS amount,
    sum(discount) AS discount,
    sum(credits_applied) AS credits_applied,
    sum(billable_amount) AS billable_amount,
    sum(cost) AS cost,
    sum(margin) AS margin
FROM rated_usage
GROUP BY customer_id, minute, model, meter;
