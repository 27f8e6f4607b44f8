"""Rating: metered quantities into money, as pure deterministic code the dataflow calls.

    engine = RatingEngine(load_books(prices, contracts, costs))
    state = RatingState()                      # picklable; snapshot it as it is
    result = engine.rate_batch(state, events)  # lines, rejections, alerts
    engine.apply_grant(state, grant)           # prepaid credits, as they arrive
    engine.expire(state, now)                  # lapsed grants, one record each; alerts

Money is Decimal on a 1e-18 grid; see `flows.rating.money` for the rounding rule.
"""

from flows.rating.alerts import Alert, AlertKind
from flows.rating.books import Books, load_books
from flows.rating.credits import CreditExpiry, CreditGrant, parse_grant
from flows.rating.engine import RatingEngine
from flows.rating.lines import Fee, RatedLine, RatingResult
from flows.rating.loading import CatalogueError
from flows.rating.state import CustomerState, RatingState

__all__ = [
    "Alert",
    "AlertKind",
    "Books",
    "CatalogueError",
    "CreditExpiry",
    "CreditGrant",
    "CustomerState",
    "Fee",
    "RatedLine",
    "RatingEngine",
    "RatingResult",
    "RatingState",
    "load_books",
    "parse_grant",
]
