-- Each customer's budget as the contracts catalogue states it when the flow starts, so
-- dashboards can set spend against it; the catalogue stays the source of truth.
CREATE TABLE IF NOT EXISTS customer_budgets
(
    customer_id String,
    budget Decimal(38, 18),
    hard_cap Bool,
    currency LowCardinality(String),
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY customer_id;
