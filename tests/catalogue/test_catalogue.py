"""The catalogue as records: the shipped files rate as they always did, records apply in
order from their effective time, what was published cannot be rewritten, and `apply`'s
diff and errors name what changed and where."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bench.catalogue import write_customers
from bench.loadgen import LoadSpec, generate
from metering.catalogue.authoring import changes, read_files
from metering.catalogue.catalogue import Catalogue
from metering.catalogue.records import Kind
from metering.catalogue.view import in_force
from metering.rating.books import CATALOGUE, load_books
from metering.rating.engine import RatingEngine
from metering.rating.loading import CatalogueError
from metering.rating.state import RatingState
from schemas.event import UsageEvent, to_micros
from schemas.meters import METER_DIMENSIONS

SEED = [CATALOGUE / "prices.yaml", CATALOGUE / "contracts.yaml", CATALOGUE / "costs.yaml"]


def seed() -> Catalogue:
    catalogue, _ = changes(Catalogue(), read_files([CATALOGUE / "meters.yaml", *SEED]))
    return catalogue


def event(customer: str, at: datetime, images: int = 10, event_id: str = "e") -> UsageEvent:
    return UsageEvent(
        event_id, at, customer, "image.generation", "sdxl", "stability", "realtime",
        {"images": images},
    )  # fmt: skip


def amounts(catalogue: Catalogue, events: list[UsageEvent]) -> list[tuple[str, Decimal, str]]:
    result = RatingEngine(catalogue.books()).rate_batch(RatingState(), events)
    assert not result.rejections, result.rejections
    return [(line.event_id, line.amount, line.price_version) for line in result.lines]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_files_as_records_rate_as_the_files_do() -> None:
    at = datetime(2026, 6, 20, 12, tzinfo=UTC)
    events = [event(f"cust-{i:04d}", at, images=i, event_id=f"e{i}") for i in range(1, 25)]
    from_files = RatingEngine(load_books(*SEED)).rate_batch(RatingState(), events)
    assert [(x.event_id, x.amount, x.billable_amount) for x in from_files.lines] == [
        (x.event_id, x.amount, x.billable_amount)
        for x in RatingEngine(seed().books()).rate_batch(RatingState(), events).lines
    ]
    assert len(from_files.lines) == 24


def test_a_new_customer_and_a_new_price_version_apply_from_their_effective_time(
    tmp_path: Path,
) -> None:
    customer = write(
        tmp_path,
        "customer.yaml",
        "customers:\n  - id: cust-new\n    contract: {id: C-new, terms: {plan: starter-49}}\n",
    )
    prices = write(
        tmp_path,
        "prices.yaml",
        """
versions:
  - id: list-2026-12
    effective_from: 2026-12-10T00:00:00Z
    prices:
      - {meter: image.generation, model: sdxl, rates: {images: 0.05}}
""",
    )
    live = seed()
    after, diff = changes(live, read_files([customer, prices]))
    assert [c.line() for c in diff] == ["+ price_version/list-2026-12", "+ customer/cust-new"]
    before = datetime(2026, 12, 9, tzinfo=UTC)
    later = datetime(2026, 12, 11, tzinfo=UTC)
    lines = amounts(after, [event("cust-new", before, event_id="a"), event("cust-new", later)])
    assert lines == [
        ("a", Decimal("0.400000000000000000"), "list-2025-01"),
        ("e", Decimal("0.500000000000000000"), "list-2026-12"),
    ]
    assert not live.knows_customer("cust-new")
    assert changes(after, read_files([customer, prices]))[1] == []


def test_a_published_version_cannot_be_rewritten(tmp_path: Path) -> None:
    prices = write(
        tmp_path,
        "prices.yaml",
        """
versions:
  - id: list-2026-03
    effective_from: 2026-03-01T00:00:00Z
    prices:
      - {meter: image.generation, model: sdxl, rates: {images: 0.05}}
""",
    )
    with pytest.raises(CatalogueError) as error:
        changes(seed(), read_files([prices]))
    assert error.value.path == str(prices)
    assert error.value.field == "versions[0]"
    assert "versions are immutable" in error.value.reason


def test_an_amendment_is_added_and_published_terms_stay(tmp_path: Path) -> None:
    amended = """
customers:
  - id: cust-0020
    name: Tidewater Energy
    contract:
      id: C-0020
      terms:
        discount_percent: {discount}
        rates:
          - {{meter: llm.tokens, model: claude-sonnet-4, mode: realtime, per: million,
             rates: {{input_tokens: 2.70, output_tokens: 13.50, cached_input_tokens: 0.27}}}}
      amendments:
        - {{id: C-0020-A1, effective_from: 2026-09-01T00:00:00Z, discount_percent: 12}}
        - {{id: C-0020-A2, effective_from: 2026-12-01T00:00:00Z, discount_percent: 15}}
"""
    good = write(tmp_path, "good.yaml", amended.format(discount="10"))
    after, diff = changes(seed(), read_files([good]))
    assert [c.line() for c in diff] == ["~ customer/cust-0020: contract.amendments[1] added"]
    december = (
        after.books()
        .contracts.customers["cust-0020"]
        .terms_at(to_micros(datetime(2026, 12, 15, tzinfo=UTC)))
    )
    assert december.id == "C-0020-A2"
    bad = write(tmp_path, "bad.yaml", amended.format(discount="11"))
    with pytest.raises(CatalogueError) as error:
        changes(seed(), read_files([bad]))
    assert (error.value.field, "add an amendment" in error.value.reason) == ("customers[0]", True)


def test_errors_name_the_file_the_field_and_the_reason(tmp_path: Path) -> None:
    unknown_plan = write(
        tmp_path, "c.yaml", "customers:\n  - {id: x, contract: {id: C-x, terms: {plan: gold}}}\n"
    )
    with pytest.raises(CatalogueError) as error:
        changes(seed(), read_files([unknown_plan]))
    assert str(error.value) == (
        f"{unknown_plan}: customers[0]: contract.terms.plan: 'gold' is not a published plan"
    )
    negative = write(
        tmp_path,
        "p.yaml",
        "versions:\n  - id: v\n    effective_from: 2027-01-01T00:00:00Z\n    prices:\n"
        "      - {meter: image.generation, model: sdxl, rates: {images: -1}}\n",
    )
    with pytest.raises(CatalogueError) as error:
        read_files([negative])
    assert error.value.field == "versions[0].prices[0].rates.images"


def test_a_snapshot_restores_the_same_catalogue(tmp_path: Path) -> None:
    plan_then_customer = write(
        tmp_path,
        "c.yaml",
        "plans:\n  gold: {discount_percent: 30}\n"
        "customers:\n  - {id: cust-0001, contract: {id: C-1, terms: {plan: gold}}}\n",
    )
    after, _ = changes(seed(), read_files([plan_then_customer]))
    restored = pickle.loads(pickle.dumps(after))
    at = datetime(2026, 6, 1, tzinfo=UTC)
    assert amounts(restored, [event("cust-0001", at)]) == amounts(after, [event("cust-0001", at)])
    assert restored.books().contracts.customers["cust-0001"].terms_at(0).discount == Decimal("0.3")


def test_show_marks_the_versions_in_force() -> None:
    lines = in_force(seed(), datetime(2026, 1, 1, tzinfo=UTC))
    assert "  list-2025-01 from 2025-01-01T00:00:00+00:00 (in force)" in lines
    assert "  list-2026-03 from 2026-03-01T00:00:00+00:00 (later)" in lines
    assert "  cust-0020 (Tidewater Energy): contract C-0020, tier default, discount 10%" in lines


METERS = """
meters:
  vector.storage:
    description: Vectors held and queries served
    dimensions:
      vector_mb_hours: {unit: megabyte-hour}
      queries: {unit: query, aggregation: count}
"""
VECTOR_PRICES = """
versions:
  - id: list-vectors
    effective_from: 2026-01-01T00:00:00Z
    prices:
      - {meter: vector.storage, model: pgvector, rates: {vector_mb_hours: 0.002, queries: 0.01}}
"""


def test_the_built_in_meters_are_catalogue_entries() -> None:
    meters = {r.id: set(r.spec.dimensions) for r in seed().of_kind(Kind.METER)}  # type: ignore[attr-defined]
    assert meters == {name: set(dims) for name, dims in METER_DIMENSIONS.items()}


def test_a_new_meter_and_its_prices_come_from_files_only(tmp_path: Path) -> None:
    files = [write(tmp_path, "meters.yaml", METERS), write(tmp_path, "p.yaml", VECTOR_PRICES)]
    after, diff = changes(seed(), read_files(files))
    assert [c.line() for c in diff] == ["+ meter/vector.storage", "+ price_version/list-vectors"]
    assert ("vector.storage", "pgvector") in after.books().prices.models


def test_a_price_of_an_undefined_dimension_names_the_meter_definition(tmp_path: Path) -> None:
    bad = VECTOR_PRICES.replace("queries: 0.01", "reads: 0.01")
    files = [write(tmp_path, "meters.yaml", METERS), write(tmp_path, "p.yaml", bad)]
    with pytest.raises(CatalogueError) as error:
        changes(seed(), read_files(files))
    assert (error.value.path, error.value.field) == (str(files[1]), "versions[0]")
    assert error.value.reason == (
        "prices[0]: ['reads'] not defined: meter 'vector.storage' measures "
        "queries (query, count), vector_mb_hours (megabyte-hour)"
    )


def test_a_generated_catalogue_knows_every_customer_the_load_generator_sends(
    tmp_path: Path,
) -> None:
    spec = LoadSpec(count=3_000, start=datetime(2026, 11, 1, tzinfo=UTC), customers=5_000)
    valid = [s.body for s in generate(spec)[0] if s.expect is None and isinstance(s.body, dict)]
    sent = {body["customer_id"] for body in valid}
    customers = write_customers(spec.customers, tmp_path / "customers.yaml")
    after, diff = changes(seed(), read_files([customers]))
    assert len(diff) == 5_000
    assert len(sent) > 500
    assert {c for c in sent if not after.knows_customer(c)} == set()
