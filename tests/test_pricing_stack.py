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
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from pricing_cases import (
    AMOUNTS,
    CHARGES,
    COMMITTED,
    LIST,
    T0,
    USAGE,
    D,
    record,
    seats_amount,
    write_contracts,
)

from infra import stack
from schemas.producer import UsageProducer
from schemas.serde import Encoder

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def env(
    kafka_bootstrap: str,
    registry_client: SchemaRegistryClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pricing")
    contracts = write_contracts(folder)
    usage, grants = (f"pricing-{uuid.uuid4().hex[:8]}", f"pricing-grants-{uuid.uuid4().hex[:8]}")
    stack.create_topics(kafka_bootstrap, {usage: 2, grants: 1})
    with UsageProducer(kafka_bootstrap, usage, Encoder(registry_client, version=3)) as sender:
        for row in USAGE:
            sender.send(record(row))
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
    start, end = (datetime.fromisoformat(document[k]) for k in ("period_start", "period_end"))
    assert (seats["kind"], seats["item"]) == ("recurring", "capacity team-seats seats (latest)")
    assert D(seats["amount"]) == seats_amount(start, end)
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
