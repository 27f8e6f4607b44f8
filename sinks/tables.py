"""Column order of every table the flow writes; rows are tuples in exactly this order.

The first two columns are always (stream, position): see `sinks.writer`. Kafka
timestamps travel as integer milliseconds, which DateTime64(3) takes as they are.
"""

from __future__ import annotations

RAW_EVENTS = "raw_events"
DEAD_LETTERS = "dead_letters"
DUPLICATES = "duplicates"
RATED_USAGE = "rated_usage"
LATE_ADJUSTMENTS = "late_adjustments"
ALERTS = "alerts"
CREDIT_GRANTS = "credit_grants"
CREDIT_EXPIRIES = "credit_expiries"
PARKED_USAGE = "parked_usage"

_SOURCE = ("stream", "position", "topic", "partition", "offset")

TABLES: dict[str, tuple[str, ...]] = {
    RAW_EVENTS: (
        *_SOURCE,
        "kafka_timestamp",
        "key",
        "value",
        "schema_id",
        "event_id",
        "customer_id",
        "received_at",
    ),
    DEAD_LETTERS: (
        *_SOURCE,
        "reason",
        "detail",
        "event_id",
        "customer_id",
        "payload",
        "kafka_timestamp",
        "received_at",
    ),
    DUPLICATES: (
        *_SOURCE,
        "event_id",
        "customer_id",
        "timestamp",
        "first_seen_timestamp",
        "fingerprint",
        "first_fingerprint",
        "conflicting",
    ),
    RATED_USAGE: (
        *_SOURCE,
        "event_id",
        "customer_id",
        "timestamp",
        "period_start",
        "meter",
        "model",
        "provider",
        "mode",
        "project_id",
        "feature",
        "quantities",
        "unit_prices",
        "amounts",
        "tiers",
        "amount",
        "discount",
        "credits_applied",
        "billable_amount",
        "cost",
        "margin",
        "currency",
        "price_version",
        "contract_version",
        "cost_version",
        "late",
        "lateness_ms",
        "adjustment",
        "kafka_timestamp",
        "rated_at",
        "redrive_of",
    ),
    LATE_ADJUSTMENTS: (
        *_SOURCE,
        "event_id",
        "customer_id",
        "timestamp",
        "original_period_start",
        "meter",
        "model",
        "amount",
        "discount",
        "credits_applied",
        "billable_amount",
        "cost",
        "currency",
        "lateness_ms",
        "watermark",
    ),
    ALERTS: (
        "stream",
        "position",
        "alert_id",
        "customer_id",
        "kind",
        "threshold",
        "value",
        "period_start",
        "at",
        "grant_id",
    ),
    CREDIT_GRANTS: (
        *_SOURCE,
        "grant_id",
        "customer_id",
        "credits",
        "amount",
        "effective_at",
        "expires_at",
    ),
    CREDIT_EXPIRIES: (
        "stream",
        "position",
        "grant_id",
        "customer_id",
        "expires_at",
        "credits",
        "amount",
    ),
    PARKED_USAGE: (
        *_SOURCE,
        "action",
        "event_id",
        "customer_id",
        "timestamp",
        "kafka_timestamp",
        "at",
    ),
}

CUSTOMER_BUDGETS = "customer_budgets"
"""Not a sink table: the catalogue's budgets, written whole when the flow starts."""
BUDGET_COLUMNS = ("customer_id", "budget", "hard_cap", "currency", "loaded_at")
