"""Money is `Decimal`, never float, and every amount follows one rounding rule.

Rate at full precision, quantize cumulative amounts to 1e-18, per-line amount is the
difference; round to cents only at invoice/statement level (ROUND_HALF_EVEN).

Why cumulative: a price is a function F of a period's cumulative quantity (tiers,
allowances, discounts all are). Each accumulator keeps its cumulative quantity and
Q(F(quantity)), Q being quantization to 1e-18, and a line's amount is
Q(F(after)) - Q(F(before)). The lines of a period therefore telescope to exactly
Q(F(total)), whatever order the events arrived in, even where F is not a terminating
decimal (GPU milliseconds at a per-hour rate). All arithmetic runs in `CONTEXT`:
60 significant digits, ROUND_HALF_EVEN, so results never depend on the caller's context.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal

CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)
STEP = Decimal("1e-18")
"""The quantum of every stored and reported amount."""
CENT = Decimal("0.01")
ZERO = Decimal(0)
HUNDRED = Decimal(100)


def q18(value: Decimal) -> Decimal:
    """Quantize to the 1e-18 amount grid, half to even."""
    return value.quantize(STEP, context=CONTEXT)


def q18_down(value: Decimal) -> Decimal:
    """Quantize towards zero: for shares of an amount whose remainder must stay non-negative."""
    return value.quantize(STEP, rounding=ROUND_DOWN, context=CONTEXT)


def to_cents(value: Decimal) -> Decimal:
    """The invoice-level rounding: to the cent, half to even."""
    return value.quantize(CENT, context=CONTEXT)


def fmt(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros: the exact value, readable."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
