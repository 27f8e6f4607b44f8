"""Prepaid credit grants onto their topic, as JSON keyed by customer (`meterflow grant`, the
API's grants endpoint and the demo)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer

from flows.settings import Settings
from metering.rating.credits import CreditGrant
from schemas.jsonform import dump_line


def grant_record(grant: CreditGrant) -> dict[str, Any]:
    """The JSON form `metering.rating.credits.parse_grant` reads: credits as a decimal string."""
    return {
        "grant_id": grant.grant_id,
        "customer_id": grant.customer_id,
        "credits": str(grant.credits),
        "effective_at": grant.effective_at,
        "expires_at": grant.expires_at,
    }


def send_grants(settings: Settings, grants: Iterable[CreditGrant]) -> int:
    """Send and wait for every acknowledgement; returns how many landed."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "message.timeout.ms": 30_000,
        }
    )
    failures: list[str] = []
    sent = 0
    for grant in grants:
        producer.produce(
            settings.credit_grants_topic,
            key=grant.customer_id.encode(),
            value=dump_line(grant_record(grant)).encode(),
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
        sent += 1
    remaining = producer.flush(30)
    if remaining:
        failures.append(f"{remaining} not acknowledged within 30 s")
    if failures:
        raise RuntimeError(f"{len(failures)} grants not delivered: {failures[0]}")
    return sent


def describe(grant: CreditGrant) -> str:
    return json.dumps(grant_record(grant), default=str)
