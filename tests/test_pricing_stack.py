"""Issue 14's pricing models through the real flow: Avro v3 events on the real broker and
registry, `meterflow run --until-end` into chDB, then `meterflow statement`, every
amount worked by hand from the shipped price book (cust-0024 pays list price) and a
committed customer added to a copy of the shipped contracts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from infra import stack
from metering.rating.books import CATALOGUE
from metering.rating.money import CONTEXT, q18
from schemas.producer import UsageProducer
from schemas.serde import Encoder

pytestmark = pytest.mark.stack

D = Decimal
LIST = "cust-0024"
COMMITTED = "cust-0900"


def _start() -> datetime:
    """Three days back, on the hour, with the next three hours in the same month."""
    t0 = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    return t0 if (t0 + timedelta(hours=3)).month == t0.month else t0 - timedelta(hours=3)


T0 = _start()
USAGE: list[tuple[str, str, str, str, dict[str, int], dict[str, str], str | None, str | None]] = [
    # (event id, customer, meter, model, quantities, properties, region, corrects)
    ("rr-1", LIST, "api.call", "rerank-api", {"calls": 60_000}, {}, None, None),
    ("rr-2", LIST, "api.call", "rerank-api", {"calls": 50_000}, {}, None, None),
    ("wh-1", LIST, "api.call", "webhooks", {"calls": 1_500}, {}, None, None),
    ("vs-1", LIST, "api.call", "vector-search", {"calls": 25_000}, {}, None, None),
    ("up-1", LIST, "image.generation", "upscaler", {"images": 500}, {}, None, None),
    ("st-1", LIST, "image.generation", "sdxl-turbo", {"images": 120}, {}, None, None),
    ("pay-1", LIST, "api.call", "payments-api", {"calls": 1}, {"amount": "100.00"}, None, None),
    ("pay-2", LIST, "api.call", "payments-api", {"calls": 1}, {"amount": "5.00"}, None, None),
    ("pay-3", LIST, "api.call", "payments-api", {"calls": 1}, {"amount": "1000.00"}, None, None),
    ("po-1", LIST, "api.call", "payouts-api", {"calls": 1}, {"amount": "12000.00"}, None, None),
    (
        "pt-1",
        LIST,
        "llm.tokens",
        "passthrough",
        {"input_tokens": 900},
        {"provider_cost": "0.004"},
        None,
        None,
    ),
    (
        "im-1",
        LIST,
        "image.generation",
        "imagen-3",
        {"images": 4},
        {"quality": "hd"},
        "eu-west-1",
        None,
    ),
    ("im-2", LIST, "image.generation", "imagen-3", {"images": 2}, {}, None, None),
    ("rr-fix", LIST, "api.call", "rerank-api", {"calls": -10_000}, {}, None, "rr-1"),
    (
        "pt-bad",
        LIST,
        "llm.tokens",
        "passthrough",
        {"input_tokens": 1},
        {"provider_cost": "-1"},
        None,
        None,
    ),
    ("st-fix", LIST, "image.generation", "sdxl-turbo", {"images": -500}, {}, None, "st-1"),
    ("cm-1", COMMITTED, "image.generation", "sdxl-turbo", {"images": 200}, {}, None, None),
    ("seats-1", LIST, "capacity", "team-seats", {"seats": 3}, {}, None, None),
]
AMOUNTS = {
    "rr-1": "130",  # 60,000 x 0.002 + 10 on entering band 1
    "rr-2": "140",  # 40,000 x 0.002 + 10,000 x 0.001 + 50 on entering band 2
    "wh-1": "1",  # 1,000 free, 500 more start one package of 1,000 at 1.00
    "vs-1": "6",  # 25,000 calls: 3 started packages of 10,000 at 2.00
    "up-1": "7",  # volume band 1: 500 x 0.01 + 2.00
    "st-1": "0.4",  # 100 free, 20 x 0.02
    "pay-1": "3.2",  # 2.9 % of 100 + 0.30
    "pay-2": "0.5",  # 0.145 + 0.30 = 0.445, raised to the 0.50 minimum
    "pay-3": "10",  # 29.00 + 0.30, lowered to the 10.00 maximum
    "po-1": "115",  # 1 % of 10,000 + 5.00 on entering, 0.5 % of 2,000
    "pt-1": "0.0046",  # 0.004 + 15 %
    "im-1": "0.24",  # eu-west-1 x hd: 4 x 0.06
    "im-2": "0.06",  # default: 2 x 0.03
    "rr-fix": "-60",  # 100,000 calls: 100,000 x 0.002 + 10 = 210, was 270; band 2's fee back
    "cm-1": "2",  # 100 free, 100 x 0.02
    "seats-1": "0",  # a level: settled at period close
}
CHARGES = {
    "band_fee": "17",  # 10 + 50 (rr-1, rr-2) - 50 (rr-fix) + 2 (up-1) + 5 (po-1)
    "package": "7",  # 1 (wh-1) + 6 (vs-1)
    "percentage": "122.80",  # 2.90 + 0.20 + 9.70 (pay-1..3) + 100 + 10 (po-1)
    "transaction_fee": "0.9",  # 3 x 0.30
    "dynamic": "0.0046",
}
"""cust-0024's charges by kind, summed over its rows."""


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    event_id, customer, meter, model, quantities, properties, region, corrects = row
    return {
        "event_id": event_id,
        "timestamp": T0 + timedelta(minutes=USAGE.index(row) + 1),
        "customer_id": customer,
        "project_id": None,
        "feature": None,
        "meter": meter,
        "model": model,
        "provider": "test",
        "mode": "realtime",
        "quantities": quantities,
        "properties": properties,
        "region": region,
        "corrects": corrects,
    }


@pytest.fixture(scope="module")
def env(
    kafka_bootstrap: str,
    registry_client: SchemaRegistryClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pricing")
    contracts = folder / "contracts.yaml"
    committed = (
        f"  - id: {COMMITTED}\n    contract: {{id: C-0900, terms: {{plan: committed-growth}}}}"
    )
    contracts.write_text(f"{(CATALOGUE / 'contracts.yaml').read_text()}\n{committed}\n")
    usage, grants = (f"pricing-{uuid.uuid4().hex[:8]}", f"pricing-grants-{uuid.uuid4().hex[:8]}")
    stack.create_topics(kafka_bootstrap, {usage: 2, grants: 1})
    with UsageProducer(kafka_bootstrap, usage, Encoder(registry_client, version=3)) as sender:
        for row in USAGE:
            sender.send(_record(row))
    assert sender.report.delivered == len(USAGE) and not sender.report.failed
    flow_env = {
        **os.environ,
        "METERFLOW_USAGE_TOPIC": usage,
        "METERFLOW_CREDIT_GRANTS_TOPIC": grants,
        "METERFLOW_CONTRACTS_FILE": str(contracts),
        "METERFLOW_CLICKHOUSE_DSN": f"chdb://{folder / 'chdb'}",
        "METERFLOW_RECOVERY_DIR": str(folder / "recovery"),
        "METERFLOW_SNAPSHOT_SECONDS": "0.5",
        "METERFLOW_SINK_FLUSH_SECONDS": "0.2",
    }
    command = [sys.executable, "-m", "commands.cli", "run", "--until-end"]
    assert subprocess.run(command, env=flow_env, timeout=600).returncode == 0
    return flow_env


READ = """
import json
from flows.settings import Settings
from sinks.clickhouse import connect
s = Settings()
c = connect(s.clickhouse_dsn, s.clickhouse_database)
rows = c.query("SELECT event_id, toString(amount), mapApply((k, v) -> (k, toString(v)), charges), "
               "corrects FROM rated_usage").result_rows
dead = c.query("SELECT event_id, reason, detail FROM dead_letters").result_rows
print(json.dumps({"rows": rows, "dead": dead}))
"""


def _written(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", READ], env=env, check=True, capture_output=True, timeout=120
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_every_model_is_rated_through_the_flow_as_worked_by_hand(env: dict[str, str]) -> None:
    written = _written(env)
    amounts = {row[0]: D(row[1]) for row in written["rows"]}
    assert amounts == {event_id: D(amount) for event_id, amount in AMOUNTS.items()}
    by_id = {row[0]: row for row in written["rows"]}
    assert by_id["rr-fix"][3] == "rr-1" and by_id["rr-1"][3] is None
    assert {k: D(v) for k, v in by_id["rr-fix"][2].items()} == {"band_fee": D(-50)}
    assert {k: D(v) for k, v in by_id["pay-3"][2].items()} == {
        "percentage": D("9.70"),
        "transaction_fee": D("0.30"),
    }
    dead = {row[0]: (row[1], row[2]) for row in written["dead"]}
    assert dead == {
        "pt-bad": (
            "invalid_field",
            "properties.provider_cost must be a finite amount, not negative, got '-1'",
        ),
        "st-fix": (
            "invalid_correction",
            "it would take images of the period below zero (120 rated, correction -500)",
        ),
    }


def _statement(env: dict[str, str], customer: str, folder: Path) -> tuple[str, dict[str, Any]]:
    path = folder / f"{customer}.json"
    command = [sys.executable, "-m", "commands.cli", "statement", "--customer", customer]
    command += ["--period", T0.strftime("%Y-%m"), "--json", str(path)]
    text = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    document: dict[str, Any] = json.loads(path.read_text())
    return text, document


def test_the_statement_shows_band_fees_packages_corrections_and_true_ups(
    env: dict[str, str], tmp_path: Path
) -> None:
    text, document = _statement(env, LIST, tmp_path)
    kinds: dict[str, Decimal] = {}
    for charge in document["charges"]:
        kinds[charge["kind"]] = kinds.get(charge["kind"], D(0)) + D(charge["amount"])
    assert kinds == {k: D(v) for k, v in CHARGES.items()}
    (correction,) = document["corrections"]
    assert (correction["event_id"], correction["corrects"]) == ("rr-fix", "rr-1")
    assert (D(correction["original_amount"]), D(correction["amount"])) == (D(130), D(-60))
    (seats,) = document["period_lines"]
    # 3 seats at 20.00 a seat-month, held from the reading to the end of the month.
    start, end = (datetime.fromisoformat(document[k]) for k in ("period_start", "period_end"))
    held = end - _record(USAGE[-1])["timestamp"]
    assert (seats["kind"], seats["item"]) == ("recurring", "capacity team-seats seats (latest)")
    held_us, period_us = (t // timedelta(microseconds=1) for t in (held, end - start))
    assert D(seats["amount"]) == q18(CONTEXT.divide(3 * 20 * held_us, period_us))
    total = sum((D(a) for e, a in AMOUNTS.items() if e != "cm-1"), D(seats["amount"]))
    assert D(document["total"]) == total
    assert "Charges by kind" in text and "Corrections" in text and "band_fee" in text

    text, document = _statement(env, COMMITTED, tmp_path)
    (true_up,) = document["period_lines"]
    assert (true_up["kind"], D(true_up["basis"]), D(true_up["amount"])) == (
        "true_up",
        D(500),
        D(498),
    )
    assert D(document["total"]) == D(500)
    assert "Minimum commitment true-up C-0900" in text
