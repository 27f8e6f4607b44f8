-- Each rated row's amount broken down by charge kind (band_fee, package, percentage,
-- transaction_fee, dynamic: parts of `amount` not priced per unit, before pooled
-- allowances, discount and credits), and on a correction the event_id it corrects.
-- Rows written before this migration have neither.
ALTER TABLE rated_usage ADD COLUMN IF NOT EXISTS charges Map(LowCardinality(String), Decimal(38, 18));
ALTER TABLE rated_usage ADD COLUMN IF NOT EXISTS corrects Nullable(String);
ALTER TABLE replayed_usage ADD COLUMN IF NOT EXISTS charges Map(LowCardinality(String), Decimal(38, 18));
ALTER TABLE replayed_usage ADD COLUMN IF NOT EXISTS corrects Nullable(String);
