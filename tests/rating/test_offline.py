"""`meterflow rate` through `rate_file`: rated lines out, bad lines reported, books checked."""

from __future__ import annotations

import io
import json
from pathlib import Path

from commands.rate import rate_file
from metering.rating.books import CATALOGUE


def _event(event_id: str, customer: str = "cust-0001", **overrides: object) -> str:
    record: dict[str, object] = {
        "event_id": event_id,
        "timestamp": "2026-06-02T10:00:00Z",
        "customer_id": customer,
        "meter": "llm.tokens",
        "model": "gpt-4o",
        "provider": "openai",
        "mode": "realtime",
        "quantities": {"input_tokens": 1_000_000, "output_tokens": 100_000},
    }
    return json.dumps(record | overrides)


def _run(tmp_path: Path, lines: list[str], **books: Path) -> tuple[int, str, str]:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    out, err = io.StringIO(), io.StringIO()
    code = rate_file(events, **books, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_rates_good_lines_and_reports_each_bad_line_by_number(tmp_path: Path) -> None:
    lines = [
        _event("ok-1"),
        "{not json",
        _event("neg", quantities={"input_tokens": -5}),
        "",
        _event("who", customer="cust-9999"),
        _event("what", model="mystery-model-7b"),
        json.dumps({"event_id": "no-customer", "timestamp": "2026-06-02T10:00:00Z"}),
        '{"grant_id": "g1", "customer_id": "cust-0015", "credits": 500,'
        ' "effective_at": "2026-06-01T00:00:00Z"}',
        _event(
            "ok-2",
            customer="cust-0015",
            model="sdxl",
            meter="image.generation",
            quantities={"images": 60},
        ),
        '{"grant_id": "g2", "customer_id": "cust-0015", "credits": -1,'
        ' "effective_at": "2026-06-01T00:00:00Z"}',
    ]
    code, out, err = _run(tmp_path, lines)
    assert code == 1
    rated = [json.loads(line) for line in out.splitlines()]
    assert [r["event_id"] for r in rated] == ["ok-1", "ok-2"]
    money = ("amount", "discount", "credits_applied", "billable_amount", "cost", "margin")
    assert [rated[0][k] for k in money] == ["3.5", "0", "0", "3.5", "2.8", "0.7"]
    assert [rated[1][k] for k in money[:4]] == ["3", "0", "3", "0"]
    assert rated[0]["currency"] == "USD"
    reported = [line for line in err.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0:2] for line in reported] == [
        ["line 2", " malformed_json"],
        ["line 3", " negative_quantity"],
        ["line 5", " unknown_customer"],
        ["line 6", " unknown_model"],
        ["line 7", " missing_field"],
        ["line 10", " invalid_quantity"],
    ]
    assert "2 lines rated, 6 lines rejected, 1 alerts" in err
    summary = err[err.index("summary") :].splitlines()
    header = "customer lines amount discount credits billable fees due cost margin"
    assert summary[1].split() == header.split()
    row = "cust-0001 1 3.50 0.00 0.00 3.50 0.00 3.50 2.80 0.70"
    assert summary[2].split() == row.split()


def test_a_clean_file_exits_zero_and_adds_base_fees_to_what_is_due(tmp_path: Path) -> None:
    small = {"input_tokens": 300_000, "output_tokens": 100_000}
    code, out, err = _run(tmp_path, [_event("a", customer="cust-0009", quantities=small)])
    assert code == 0 and len(out.splitlines()) == 1
    row = next(line for line in err.splitlines() if line.startswith("cust-0009"))
    assert row.split()[6:8] == ["49.00", "49.00"]


def test_a_malformed_price_book_fails_with_file_field_and_reason(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    text = (CATALOGUE / "prices.yaml").read_text()
    prices.write_text(text.replace("rates: {images: 0.04}", "rates: {images: free}", 1))
    code, out, err = _run(tmp_path, [_event("a")], prices=prices)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {prices}: versions[0].prices[10].rates.images: ")
    assert "decimal" in err


def test_an_unreadable_events_file_fails_cleanly(tmp_path: Path) -> None:
    err = io.StringIO()
    assert rate_file(tmp_path / "missing.jsonl", out=io.StringIO(), err=err) == 2
    assert "missing.jsonl: cannot read" in err.getvalue()


def test_grants_lapse_where_the_watermark_passes_their_expiry_as_in_the_flow(
    tmp_path: Path,
) -> None:
    """Lateness 10 minutes, sdxl at 5 credits. Usage a minute before expiry arriving
    after usage five minutes past it still draws; usage past expiry plus the lateness
    lapses the grant, and usage dated before the expiry after that draws nothing."""
    grant = {
        "grant_id": "g1",
        "customer_id": "cust-0015",
        "credits": 1000,
        "effective_at": "2026-06-01T00:00:00Z",
        "expires_at": "2026-06-02T12:00:00Z",
    }
    sdxl = {"meter": "image.generation", "model": "sdxl", "quantities": {"images": 1}}
    lines = [json.dumps(grant)] + [
        _event(event_id, "cust-0015", timestamp=at, **sdxl)
        for event_id, at in (
            ("after", "2026-06-02T12:05:00Z"),
            ("late", "2026-06-02T11:59:00Z"),
            ("past", "2026-06-02T12:11:00Z"),
            ("too-late", "2026-06-02T11:58:00Z"),
        )
    ]
    code, out, err = _run(tmp_path, lines)
    credits = {
        line["event_id"]: line["credits_applied"] for line in map(json.loads, out.splitlines())
    }
    assert code == 0
    assert credits == {"after": "0", "late": "0.05", "past": "0", "too-late": "0"}
    assert 'lapsed: {"grant_id": "g1", "customer_id": "cust-0015"' in err
    assert '"credits": "995"' in err
