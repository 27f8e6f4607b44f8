"""The columns of every table the flow writes, as Arrow schemas: one per table, beside
the DDL in `sinks/migrations`, and the only place their names and types are written.

The first two columns are always (stream, position): see `sinks.writer`.
"""

from __future__ import annotations

import pyarrow as pa

RAW_EVENTS = "raw_events"
DEAD_LETTERS = "dead_letters"
DUPLICATES = "duplicates"
RATED_USAGE = "rated_usage"
LATE_ADJUSTMENTS = "late_adjustments"
ALERTS = "alerts"
CREDIT_GRANTS = "credit_grants"
CREDIT_EXPIRIES = "credit_expiries"
PARKED_USAGE = "parked_usage"

MONEY = pa.decimal128(38, 18)
MILLIS = pa.timestamp("ms", "UTC")
MICROS = pa.timestamp("us", "UTC")
TEXT = pa.string()

_POSITION = [("stream", TEXT), ("position", pa.uint64())]
_SOURCE = [*_POSITION, ("topic", TEXT), ("partition", pa.uint16()), ("offset", pa.uint64())]

SCHEMAS: dict[str, pa.Schema] = {
    RAW_EVENTS: pa.schema(
        [
            *_SOURCE,
            ("kafka_timestamp", MILLIS),
            ("key", TEXT),
            ("value", pa.binary()),
            ("schema_id", pa.uint32()),
            ("event_id", TEXT),
            ("customer_id", TEXT),
            ("received_at", MICROS),
        ]
    ),
    DEAD_LETTERS: pa.schema(
        [
            *_SOURCE,
            ("reason", TEXT),
            ("detail", TEXT),
            ("event_id", TEXT),
            ("customer_id", TEXT),
            ("payload", pa.binary()),
            ("kafka_timestamp", MILLIS),
            ("received_at", MICROS),
        ]
    ),
    DUPLICATES: pa.schema(
        [
            *_SOURCE,
            ("event_id", TEXT),
            ("customer_id", TEXT),
            ("timestamp", MICROS),
            ("first_seen_timestamp", MICROS),
            ("fingerprint", pa.uint32()),
            ("first_fingerprint", pa.uint32()),
            ("conflicting", pa.bool_()),
        ]
    ),
    RATED_USAGE: pa.schema(
        [
            *_SOURCE,
            ("event_id", TEXT),
            ("customer_id", TEXT),
            ("timestamp", MICROS),
            ("period_start", MILLIS),
            ("meter", TEXT),
            ("model", TEXT),
            ("provider", TEXT),
            ("mode", TEXT),
            ("project_id", TEXT),
            ("feature", TEXT),
            ("quantities", pa.map_(TEXT, pa.int64())),
            ("unit_prices", pa.map_(TEXT, MONEY)),
            ("amounts", pa.map_(TEXT, MONEY)),
            ("tiers", pa.list_(TEXT)),
            ("amount", MONEY),
            ("discount", MONEY),
            ("credits_applied", MONEY),
            ("billable_amount", MONEY),
            ("cost", MONEY),
            ("margin", MONEY),
            ("currency", TEXT),
            ("price_version", TEXT),
            ("contract_version", TEXT),
            ("cost_version", TEXT),
            ("late", pa.bool_()),
            ("lateness_ms", pa.uint64()),
            ("adjustment", pa.bool_()),
            ("kafka_timestamp", MILLIS),
            ("rated_at", MILLIS),
            ("charges", pa.map_(TEXT, MONEY)),
            ("corrects", TEXT),
            ("redrive_of", TEXT),
        ]
    ),
    LATE_ADJUSTMENTS: pa.schema(
        [
            *_SOURCE,
            ("event_id", TEXT),
            ("customer_id", TEXT),
            ("timestamp", MICROS),
            ("original_period_start", MILLIS),
            ("meter", TEXT),
            ("model", TEXT),
            ("amount", MONEY),
            ("discount", MONEY),
            ("credits_applied", MONEY),
            ("billable_amount", MONEY),
            ("cost", MONEY),
            ("currency", TEXT),
            ("lateness_ms", pa.uint64()),
            ("watermark", MICROS),
        ]
    ),
    ALERTS: pa.schema(
        [
            *_POSITION,
            ("alert_id", TEXT),
            ("customer_id", TEXT),
            ("kind", TEXT),
            ("threshold", MONEY),
            ("value", MONEY),
            ("period_start", MILLIS),
            ("at", MICROS),
            ("grant_id", TEXT),
        ]
    ),
    CREDIT_GRANTS: pa.schema(
        [
            *_SOURCE,
            ("grant_id", TEXT),
            ("customer_id", TEXT),
            ("credits", MONEY),
            ("amount", MONEY),
            ("effective_at", MICROS),
            ("expires_at", MICROS),
        ]
    ),
    CREDIT_EXPIRIES: pa.schema(
        [
            *_POSITION,
            ("grant_id", TEXT),
            ("customer_id", TEXT),
            ("expires_at", MICROS),
            ("credits", MONEY),
            ("amount", MONEY),
        ]
    ),
    PARKED_USAGE: pa.schema(
        [
            *_SOURCE,
            ("action", TEXT),
            ("event_id", TEXT),
            ("customer_id", TEXT),
            ("timestamp", MICROS),
            ("kafka_timestamp", MILLIS),
            ("at", MICROS),
        ]
    ),
}

TABLES: dict[str, tuple[str, ...]] = {table: tuple(s.names) for table, s in SCHEMAS.items()}
"""Each table's column names, in order."""

CUSTOMER_BUDGETS = "customer_budgets"
"""Not a sink table: the catalogue's budgets, written whole when the flow starts."""
BUDGET_COLUMNS = ("customer_id", "budget", "hard_cap", "currency", "loaded_at")
