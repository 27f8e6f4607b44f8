-- A re-send whose content differs from the first arrival (another quantity, meter or
-- time under the same event id) is still a duplicate, the first arrival wins, but it is
-- recorded as conflicting with both fingerprints (crc32 of the Avro body as sent).
ALTER TABLE duplicates ADD COLUMN IF NOT EXISTS fingerprint UInt32;
ALTER TABLE duplicates ADD COLUMN IF NOT EXISTS first_fingerprint UInt32;
ALTER TABLE duplicates ADD COLUMN IF NOT EXISTS conflicting Bool;

DROP TABLE IF EXISTS outcomes_duplicates_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS outcomes_duplicates_mv TO outcomes_minute AS
SELECT
    customer_id,
    toStartOfMinute(timestamp) AS minute,
    if(conflicting, 'conflicting_duplicate', 'duplicate') AS outcome,
    '' AS reason,
    count() AS events
FROM duplicates
GROUP BY customer_id, minute, outcome;
