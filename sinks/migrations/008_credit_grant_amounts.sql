-- A grant's worth in currency (credits at the customer's tier's credit value), so credit
-- balances can be shown in money beside spend.
ALTER TABLE credit_grants ADD COLUMN IF NOT EXISTS amount Decimal(38, 18) AFTER credits;
