"""The live catalogue: customers, contracts, plans, price and cost book versions as
versioned records on a compacted topic, applied in order into the books rating uses."""
