"""Bar charts drawn as SVG on the server.

Why not a JavaScript chart library: the page has four simple bar charts, SVG drawn here
needs no third-party code to vendor, license or keep current, nothing to load at run
time, works without JavaScript, and carries each bar's exact figure (the `Decimal`
string, not a float) in `data-value`, so a test or a screen reader reads what was drawn.
Floats only place the bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from html import escape

from metering.rating.money import fmt

WIDTH = 640
BAR = 22
GAP = 6
LABEL = 150


def bar_chart(chart: str, rows: Sequence[tuple[str, Decimal, str]], unit: str) -> str:
    """Horizontal bars, one per (label, value, shown text), scaled to the largest value."""
    if not rows:
        return f'<p class="empty" data-chart="{escape(chart)}">No usage in this period yet.</p>'
    top = max(value for _, value, _ in rows) or Decimal(1)
    span = WIDTH - LABEL - 140
    height = len(rows) * (BAR + GAP) + GAP
    bars = []
    for i, (label, value, shown) in enumerate(rows):
        y = GAP + i * (BAR + GAP)
        width = max(1.0, float(value / top) * span) if value else 0.0
        baseline = f"{y + BAR * 0.7:.1f}"
        bars.append(
            f'<g class="bar" data-label="{escape(label)}" data-value="{fmt(value)}">'
            f'<text x="{LABEL - 8}" y="{baseline}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{LABEL}" y="{y}" width="{width:.1f}" height="{BAR}" rx="3"></rect>'
            f'<text x="{LABEL + width + 6:.1f}" y="{baseline}">{escape(shown)}</text></g>'
        )
    return (
        f'<svg class="chart" data-chart="{escape(chart)}" data-unit="{escape(unit)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">'
        + "".join(bars)
        + "</svg>"
    )


def gauge(chart: str, value: Decimal, limit: Decimal | None, shown: str) -> str:
    """One bar of `value` against `limit` (full width); without a limit, the value alone."""
    share = 1.0 if not limit else min(1.0, float(value / limit))
    fill = "over" if limit is not None and value >= limit else "fill"
    limit_text = "" if limit is None else fmt(limit)
    return (
        f'<svg class="gauge" data-chart="{escape(chart)}" data-value="{fmt(value)}" '
        f'data-limit="{limit_text}" viewBox="0 0 {WIDTH} 34" width="{WIDTH}" height="34" '
        f'role="img"><rect class="track" x="0" y="4" width="{WIDTH}" height="26" rx="4"></rect>'
        f'<rect class="{fill}" x="0" y="4" width="{share * WIDTH:.1f}" height="26" rx="4"></rect>'
        f'<text x="10" y="22">{escape(shown)}</text></svg>'
    )
