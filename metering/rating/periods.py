"""Billing periods: whole months from an anchor date, in UTC.

The anchor is the first day of some period; periods repeat every 1, 3 or 12 months on
the same day of the month (at most 28, so every month has it). The default anchor,
2000-01-01 monthly, gives calendar months. An event's period follows from its event
time alone, so a late event lands in its own period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from metering.rating.tiers import ONE
from schemas.event import from_micros, to_micros

CALENDAR_ANCHOR = date(2000, 1, 1)


@dataclass(frozen=True, slots=True)
class Billing:
    months: int
    anchor: date = CALENDAR_ANCHOR

    def period(self, ts_us: int) -> tuple[int, int]:
        """[start, end) in microseconds of the period holding `ts_us`."""
        ts, anchor = from_micros(ts_us), self.anchor
        elapsed = (ts.year - anchor.year) * 12 + ts.month - anchor.month - (ts.day < anchor.day)
        k = elapsed // self.months
        return self._start(k), self._start(k + 1)

    def _start(self, k: int) -> int:
        month = self.anchor.year * 12 + self.anchor.month - 1 + k * self.months
        return to_micros(datetime(month // 12, month % 12 + 1, self.anchor.day, tzinfo=UTC))


MONTHLY = Billing(1)


def overlap(start: int, end: int, other_start: int, other_end: int) -> int:
    """Length of the intersection of two half-open intervals (0 if disjoint)."""
    return max(0, min(end, other_end) - max(start, other_start))


class Proration:
    """Shares of billing periods that segments (price and contract versions) cover, cached
    per period and segment: the same share serves every event of the period."""

    def __init__(self) -> None:
        self._scales: dict[tuple[int, str], Decimal] = {}

    def scale(self, start: int, end: int, key: str, seg_start: int, seg_end: int) -> Decimal:
        """The share of the period [start, end) that a segment covers, for proration."""
        if seg_start <= start and seg_end >= end:
            return ONE
        scale = self._scales.get((start, key))
        if scale is None:
            scale = self._scales[start, key] = Decimal(overlap(start, end, seg_start, seg_end)) / (
                end - start
            )
        return scale
