"""ClickHouse and dead-letter sinks, the connection factory and the DDL they write to."""
