"""`/portal`: a customer's usage page, rendered on the server from the API's own answers.

Reached with a customer-scoped key (`?key=` once, which sets an HttpOnly cookie so the
statement's CSV link works, or a header); an operator key names `?customer=`. It shows
this period's spend against budget, daily spend, tokens by model, credits remaining and
the latest statement, every figure exact and also in `data-value` attributes.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from api.access import COOKIE, State, authenticate, presented_key, require_reader
from api.charts import bar_chart, gauge
from api.queries import balance_of, usage_json
from api.state import ApiState
from metering.rating.money import fmt, to_cents
from reports.statement import statement
from schemas.validation import utc_now

router = APIRouter()

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330;max-width:760px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
svg text{font-size:13px;fill:#1d2330}.bar rect,.gauge .fill{fill:#3b6fd8}
.gauge .over{fill:#c8372d}.gauge .track{fill:#e4e8f0}
table{border-collapse:collapse}td,th{padding:.2rem .8rem;text-align:right}
th:first-child,td:first-child{text-align:left}.muted{color:#667}
"""


@router.get("/portal", response_class=HTMLResponse)
def portal(
    request: Request, state: State, key: str | None = None, customer: str | None = None
) -> HTMLResponse:
    caller = authenticate(state, key or presented_key(request))
    customer_id = customer or ("" if caller.operator else caller.scope)
    if not customer_id:
        raise HTTPException(400, "an operator key names the customer: /portal?customer=ID")
    require_reader(caller, customer_id)
    page = HTMLResponse(_render(state, customer_id))
    if key:
        page.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/")
    return page


def _render(state: ApiState, customer_id: str) -> str:
    account = balance_of(state, customer_id)
    standing, budget = account.standing, account.budget
    daily = usage_json(state, customer_id, None, None, "day", ())
    models = usage_json(state, customer_id, None, None, "month", ("model",), meter="llm.tokens")
    period = state.current_period(state.customer(customer_id), utc_now())
    with state.clickhouse() as client:
        latest = statement(client, state.books, customer_id, period)
    currency = account.currency
    spend_text = f"{to_cents(standing.spent)} {currency}" + (
        " (no budget set)"
        if budget is None
        else f" of {to_cents(budget.limit)} {currency} budget"
        + (", hard cap" if budget.hard_cap else "")
    )
    refusal = standing.refusal
    allowed = (
        "Usage is allowed."
        if refusal is None
        else f"Usage is refused ({refusal.replace('_', ' ')})."
    )
    day_rows = [
        (w["window_start"][:10], Decimal(w["billable_amount"]), _cents(w["billable_amount"]))
        for w in daily["windows"]
    ]
    token_rows = [
        (w["model"], Decimal(tokens), f"{tokens:,} tokens")
        for w in models["windows"]
        if (tokens := sum(w["quantities"].values()))
    ]
    credits = account.to_json()["credits"]
    csv_link = f"/v1/customers/{customer_id}/statements/{period}?format=csv"
    sections = [
        f"<h1>Usage of {escape(customer_id)}</h1>",
        f'<p class="muted">Billing period {account.period_start:%Y-%m-%d} to '
        f"{account.period_end:%Y-%m-%d} (UTC), in {escape(currency)}; figures as metered "
        f"up to {utc_now():%Y-%m-%d %H:%M:%S} UTC.</p>",
        f'<p id="entitlement" data-reason="{refusal or ""}">{allowed}</p>',
        "<h2>Spend this period</h2>",
        gauge("spend", standing.spent, None if budget is None else budget.limit, spend_text),
        "<h2>Daily spend</h2>",
        bar_chart("daily-spend", day_rows, currency),
        "<h2>Tokens by model</h2>",
        bar_chart("tokens-by-model", token_rows, "tokens"),
        "<h2>Prepaid credits</h2>",
        gauge(
            "credits",
            standing.remaining,
            standing.granted or None,
            f"{to_cents(standing.remaining)} {currency} left of {to_cents(standing.granted)}",
        ),
        _table(
            "credits-table",
            [(name, credits[name]) for name in ("granted", "used", "expired", "remaining")],
        ),
        f"<h2>Statement {escape(period)}</h2>",
        _table(
            "statement",
            [
                ("usage", fmt(latest.usage.amount)),
                ("credits applied", fmt(latest.usage.credits)),
                ("usage billable", fmt(latest.usage.billable)),
                ("base fees", fmt(latest.base_fees)),
                ("total due", str(latest.total_due)),
            ],
        ),
        f'<p><a id="statement-csv" href="{escape(csv_link)}">Download the statement (CSV)</a></p>',
    ]
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>meterflow usage: {escape(customer_id)}</title><style>{_STYLE}</style></head>"
        f'<body data-customer="{escape(customer_id)}">{"".join(sections)}</body></html>'
    )


def _table(name: str, rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f'<tr><td>{escape(label)}</td><td data-field="{escape(label)}" '
        f'data-value="{escape(str(value))}">{escape(_cents(str(value)))}</td></tr>'
        for label, value in rows
    )
    return f'<table data-table="{escape(name)}">{cells}</table>'


def _cents(value: str) -> str:
    return f"{to_cents(Decimal(value)):,}"
