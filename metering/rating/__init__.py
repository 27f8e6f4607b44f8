"""Rating: metered quantities into money, as pure deterministic code the dataflow calls.

    engine = RatingEngine(load_books(prices, contracts, costs))
    state = RatingState()                      # picklable; snapshot it as it is
    result = engine.rate_batch(state, events)  # lines, rejections, alerts
    engine.apply_grant(state, grant)           # prepaid credits, as they arrive
    engine.expire(state, now)                  # lapsed grants, one record each; alerts
    engine.close_period(customer, start, usage, readings)  # recurring meters, commitments

Money is Decimal on a 1e-18 grid; see `metering.rating.money` for the rounding rule.
"""

from metering.rating.alerts import Alert, AlertKind
from metering.rating.books import Books, load_books
from metering.rating.commitments import PeriodLine
from metering.rating.credits import CreditExpiry, CreditGrant, parse_grant
from metering.rating.engine import RatingEngine
from metering.rating.lines import Fee, RatedLine, RatingResult
from metering.rating.loading import CatalogueError
from metering.rating.recurring import Reading
from metering.rating.state import CustomerState, RatingState

__all__ = [
    "Alert",
    "AlertKind",
    "Books",
    "CatalogueError",
    "CreditExpiry",
    "CreditGrant",
    "CustomerState",
    "Fee",
    "PeriodLine",
    "RatedLine",
    "RatingEngine",
    "RatingResult",
    "RatingState",
    "Reading",
    "load_books",
    "parse_grant",
]
