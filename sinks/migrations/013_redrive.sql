-- A dead letter redriven into the live flow (`meterflow redrive`) is rated from the
-- redrive topic; redrive_of keeps the topic/partition/offset of the usage it came from.
ALTER TABLE rated_usage ADD COLUMN IF NOT EXISTS redrive_of String DEFAULT '';
