"""The metering API: ingest over HTTP, usage and balance queries, entitlement checks,
statements, grants and a customer usage page. The top layer: it may import any other."""
