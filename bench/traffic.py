"""The simulated world of one generated run: one seeded RNG and a simulated clock make
every unique event, retry and malformed send, so a seed reproduces the same sends."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

from bench.spoiling import MALFORMED_REASONS, spoil
from bench.usage_mix import (
    CATALOGUE,
    FEATURES,
    REGIONS,
    SDKS,
    SHAPES,
    customer_ids,
    rank_weights,
)
from bench.wire import Send, Wire
from schemas.event import from_micros, to_micros

V2_SHARE = 0.7
"""Fraction of valid events written with contract v2; the rest use v1, to exercise evolution."""

_US = timedelta(microseconds=1)
_SECOND_US = 1_000_000
_LATENESS_US = (2 * 60 * _SECOND_US, 6 * 3600 * _SECOND_US)
_HOLD_US = (_SECOND_US, 30 * _SECOND_US)
_MAX_RETRY_US = 300 * _SECOND_US


class Traffic:
    """The simulated world of one run: one RNG, the customer mix and the model mix."""

    def __init__(
        self, seed: int, customers: int, models: Sequence[str], start: datetime, span: timedelta
    ):
        self._rng = rng = random.Random(seed)
        self._customers = customer_ids(customers)
        ranks = list(range(1, customers + 1))
        rng.shuffle(ranks)
        self._customer_weights = rank_weights(ranks)
        self._profiles = [p for p in CATALOGUE if p.model in models]
        self._profile_weights = list(accumulate(p.weight for p in self._profiles))
        self._start_us = to_micros(start)
        self._span_us = span // _US

    def unique_events(self, n: int, late_rate: float, out_of_order_rate: float) -> list[Send]:
        """`n` events at random times of the span, `late_rate` of them late (an event time
        minutes to hours before their send) and `out_of_order_rate` held back seconds."""
        rng = self._rng
        emitted = sorted(self._start_us + rng.randrange(self._span_us) for _ in range(n))
        late = set(rng.sample(range(n), round(n * late_rate)))
        held = set(rng.sample(range(n), round(n * out_of_order_rate)))
        sends = []
        for i, at in enumerate(emitted):
            event_us = at - _log_uniform(rng, *_LATENESS_US) if i in late else at
            sent_us = at + rng.randint(*_HOLD_US) if i in held else at
            wire = Wire.V2 if rng.random() < V2_SHARE else Wire.V1
            record = self._record(from_micros(event_us), wire, batch=i in late)
            sends.append(
                Send(
                    from_micros(sent_us),
                    record["customer_id"],
                    wire,
                    record,
                    late=i in late,
                    out_of_order=i in held,
                )
            )
        return sends

    def duplicates(self, originals: list[Send], n: int) -> list[Send]:
        """Retries: the same record, re-sent a moment to minutes after the original."""
        retries = self._rng.choices(originals, k=n)
        return [
            replace(
                original,
                sent_at=original.sent_at + self._retry_delay(),
                duplicate=True,
                late=False,
                out_of_order=False,
            )
            for original in retries
        ]

    def malformed(self, n: int) -> list[Send]:
        sends = []
        for i in range(n):
            sent_at = from_micros(self._start_us + self._rng.randrange(self._span_us))
            record = self._record(sent_at, Wire.V2, batch=False)
            reason = MALFORMED_REASONS[i % len(MALFORMED_REASONS)]
            wire, body = spoil(self._rng, reason, record, sent_at)
            sends.append(Send(sent_at, record["customer_id"], wire, body, expect=reason))
        return sends

    def _record(self, timestamp: datetime, wire: Wire, batch: bool) -> dict[str, Any]:
        rng = self._rng
        profile = rng.choices(self._profiles, cum_weights=self._profile_weights)[0]
        customer = rng.choices(self._customers, cum_weights=self._customer_weights)[0]
        quantities, properties = SHAPES[profile.meter](rng, profile.model)
        if rng.random() < 0.8:
            properties["sdk"] = rng.choice(SDKS)
        project = f"proj-{customer[5:]}-{rng.randint(1, 3)}" if rng.random() < 0.6 else None
        realtime = not batch and (profile.meter != "llm.tokens" or rng.random() < 0.95)
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": timestamp,
            "customer_id": customer,
            "project_id": project,
            "feature": rng.choice(FEATURES) if rng.random() < 0.5 else None,
            "meter": profile.meter,
            "model": profile.model,
            "provider": rng.choice(profile.providers),
            "mode": "realtime" if realtime else "batch",
            "quantities": quantities,
            "properties": properties,
            "region": rng.choice(REGIONS) if wire is Wire.V2 and rng.random() < 0.7 else None,
            "corrects": None,
        }

    def _retry_delay(self) -> timedelta:
        delay_us = int(self._rng.lognormvariate(math.log(2 * _SECOND_US), 1.0))
        return _US * min(max(delay_us, 1_000), _MAX_RETRY_US)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))
