"""The live catalogue on the real stack: one flow in tail mode, never restarted, while
`meterflow catalogue apply` adds a customer and a price version effective in the past
of the open period. Usage after each record in the shard's order is rated with it, from
its effective time; what was rated before is not rated again; reconcile passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from commands.topic_reader import read_to_end
from flows.grants import grant_record
from flows.settings import Settings
from infra import stack
from metering.rating.credits import CreditGrant
from metering.rating.money import q18
from schemas.jsonform import dump_line
from schemas.producer import UsageProducer
from schemas.serde import Encoder
from tests.catalogue.test_catalogue import METERS, VECTOR_PRICES
from tests.catalogue.test_meter_aggregation import EU_RATES, RATES
from tests.catalogue.test_meter_aggregation import METERS as SEARCH_METER
from tests.catalogue.test_meter_aggregation import PRICES as SEARCH_PRICES
from tests.conftest import PORT_BASE
from tests.image_events import image_event

pytestmark = pytest.mark.stack

CUSTOMER = "cust-live"
METRICS_PORT = PORT_BASE + 464
NOW = datetime.now(UTC).replace(microsecond=0)
EFFECTIVE = NOW - timedelta(minutes=30)
"""The new price's effective time: in the open period, before the usage that uses it."""

AMENDED = NOW - timedelta(minutes=10)
CUSTOMER_FILE = f"""
customers:
  - id: {CUSTOMER}
    name: Live Onboarding
    contract:
      id: C-live
      terms: {{discount_percent: 10}}
      amendments:
        - {{id: C-live-A1, effective_from: {AMENDED.isoformat()}, discount_percent: 20}}
"""
PRICE_FILE = f"""
versions:
  - id: list-live
    effective_from: {EFFECTIVE.isoformat()}
    prices:
      - {{meter: image.generation, model: sdxl, rates: {{images: 0.05}}}}
"""


def send_grant(bootstrap: str, topic: str) -> None:
    """1 credit of the customer (1.00 at list price), in effect from an hour ago."""
    grant = CreditGrant("g-live", CUSTOMER, Decimal(1), NOW - timedelta(hours=1))
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, dump_line(grant_record(grant)).encode(), key=CUSTOMER.encode())
    assert producer.flush(30) == 0


@pytest.fixture
def env(settings: Settings, kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    name = uuid.uuid4().hex[:8]
    topics = {
        "USAGE": (f"live-usage-{name}", 4),
        "CREDIT_GRANTS": (f"live-grants-{name}", 2),
        "CATALOGUE": (f"live-catalogue-{name}", 1),
        "REDRIVE": (f"live-redrive-{name}", 2),
        "DEAD_LETTER": (f"live-dead-letters-{name}", 1),
    }
    catalogue = topics["CATALOGUE"][0]
    stack.create_topics(kafka_bootstrap, dict(topics.values()), frozenset({catalogue}))
    return {
        **os.environ,
        **{f"METERFLOW_{kind}_TOPIC": topic for kind, (topic, _) in topics.items()},
        "METERFLOW_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}",
        "METERFLOW_RECOVERY_DIR": str(tmp_path / "recovery"),
        "METERFLOW_SNAPSHOT_SECONDS": "0.5",
        "METERFLOW_SINK_FLUSH_SECONDS": "0.2",
        "METERFLOW_METRICS_PORT": str(METRICS_PORT),
    }


@pytest.fixture
def tail_flow(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A flow in tail mode; its log is printed when a test fails."""
    log = tmp_path / "flow.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "commands.cli", "run"]
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
    print(log.read_text()[-5000:])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def flow_metrics() -> list[str]:
    """The running flow's metrics, none before it serves them."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=2) as r:
            return [line for line in r.read().decode().splitlines() if line.startswith("meterflow")]
    except OSError:
        return []


def wait_for(metric: str, count: int, timeout: float = 40) -> None:
    """Until the flow's counters named `metric` add up to `count`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = flow_metrics()
        done = [float(x.split()[-1]) for x in lines if x.startswith(metric)]
        if sum(done) >= count:
            return
        assert time.monotonic() < deadline, f"{metric} below {count} in {timeout} s: {lines}"
        time.sleep(0.2)


def wait_outcomes(count: int) -> None:
    """Until `count` usage records have an outcome."""
    wait_for("meterflow_events_total{", count)


def stop_when_written(flow: subprocess.Popen[bytes], rated: int, env: dict[str, str]) -> None:
    """Once the sink has written `rated` rated rows, kill the flow (a tail-mode flow runs
    until it is stopped), then resume it to the end of its topics: a kill may cut an
    insert short between a table and its views, which the resumed sink completes."""
    wait_for("meterflow_produce_to_queryable_seconds_count", rated)
    flow.kill()
    flow.wait(timeout=30)
    resumed = cli(env, "run", "--until-end")
    assert resumed.returncode == 0, resumed.stderr[-3000:]


QUERY = """
import json, sys
from flows.settings import Settings
from sinks.clickhouse import connect
s = Settings()
c = connect(s.clickhouse_dsn, s.clickhouse_database)
topics = {"grants_topic": s.credit_grants_topic}
queries = json.loads(sys.argv[1])
print(json.dumps({
    name: c.query(sql, parameters=topics if "%(" in sql else None).result_rows
    for name, sql in queries.items()
}))
"""


def query(env: dict[str, str], **queries: str) -> dict[str, Any]:
    """The rows of each named query, read by a process of its own after the flow has
    stopped (one process at a time opens chDB)."""
    read = subprocess.run(
        [sys.executable, "-c", QUERY, json.dumps(queries)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    found: dict[str, Any] = json.loads(read.stdout)
    return found


def test_parked_usage_new_customers_and_prices_in_a_running_flow(
    env: dict[str, str],
    tail_flow: subprocess.Popen[bytes],
    registry_client: SchemaRegistryClient,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """Usage of a customer not in the catalogue is parked, then rated on the terms in force
    at each event's time once `catalogue apply` adds the customer; a price effective in the
    past of the open period prices only usage after it in the order; a customer that never
    appears stays parked and reconcile counts it. A grant of the customer sent between
    its two parked events is parked too and applied between them when it appears."""
    (tmp_path / "customer.yaml").write_text(CUSTOMER_FILE)
    (tmp_path / "prices.yaml").write_text(PRICE_FILE)
    sender = UsageProducer(kafka_bootstrap, env["METERFLOW_USAGE_TOPIC"], Encoder(registry_client))
    with sender:
        sender.send(image_event("parked-1", NOW - timedelta(minutes=20), 10, CUSTOMER))
    wait_for("meterflow_parked_total", 1)
    send_grant(kafka_bootstrap, env["METERFLOW_CREDIT_GRANTS_TOPIC"])
    wait_for('meterflow_parked_grants_total{action="parked"}', 1)
    with sender:
        sender.send(image_event("parked-2", NOW - timedelta(minutes=5), 10, CUSTOMER))
        sender.send(image_event("ghost-1", NOW - timedelta(minutes=5), 10, "cust-ghost"))
    wait_for("meterflow_parked_total", 3)
    assert not [x for x in flow_metrics() if x.startswith("meterflow_events_total{")]

    applied = cli(env, "catalogue", "apply", str(tmp_path / "customer.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[0] == f"+ customer/{CUSTOMER}"
    again = cli(env, "catalogue", "apply", str(tmp_path / "customer.yaml"))
    assert again.stdout.splitlines() == ["no changes"], again.stderr
    wait_for("meterflow_unparked_total", 2)
    wait_for('meterflow_parked_grants_total{action="released"}', 1)

    applied = cli(env, "catalogue", "apply", str(tmp_path / "prices.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[0] == "+ price_version/list-live"
    with sender:
        sender.send(image_event("older-than-price", NOW - timedelta(minutes=50), 10, CUSTOMER))
        sender.send(image_event("after-price", NOW - timedelta(minutes=2), 10, CUSTOMER))
    wait_outcomes(4)
    shown = cli(env, "catalogue", "show", "--at", (NOW - timedelta(minutes=1)).isoformat())
    assert "  list-live from " + EFFECTIVE.isoformat() + " (in force)" in shown.stdout
    assert f"  {CUSTOMER} (Live Onboarding): contract C-live-A1, tier default, discount 20%" in (
        shown.stdout.splitlines()
    )

    assert tail_flow.poll() is None, "the flow stopped"
    stop_when_written(tail_flow, 4, env)
    found = query(
        env,
        rated="SELECT event_id, toString(amount), toString(discount), price_version, "
        "contract_version, toString(credits_applied) FROM rated_usage "
        "WHERE customer_id = 'cust-live'",
        grants="SELECT grant_id, toString(amount) FROM credit_grants",
        parked="SELECT event_id, action FROM parked_usage FINAL WHERE topic = %(grants_topic)s",
    )
    d = Decimal
    # The grant's 1.00 covers what parked-2 (0.32) and older-than-price (0.36) pay after
    # discount and 0.32 of after-price's 0.40; parked-1 came before it in the order.
    assert {row[0]: (d(row[1]), d(row[2]), *row[3:5], d(row[5])) for row in found["rated"]} == {
        "parked-1": (d("0.40"), d("0.04"), "list-2025-01", "C-live", d(0)),
        "parked-2": (d("0.40"), d("0.08"), "list-2025-01", "C-live-A1", d("0.32")),
        "older-than-price": (d("0.40"), d("0.04"), "list-2025-01", "C-live", d("0.36")),
        "after-price": (d("0.50"), d("0.10"), "list-live", "C-live-A1", d("0.32")),
    }
    assert [(g, d(amount)) for g, amount in found["grants"]] == [("g-live", d(1))]
    assert sorted(found["parked"]) == [["g-live", "parked"], ["g-live", "released"]]
    reconciled = cli(env, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "  parked       1" in reconciled.stdout.splitlines()


def test_a_meter_added_through_catalogue_apply_only_is_rated(
    env: dict[str, str],
    tail_flow: subprocess.Popen[bytes],
    registry_client: SchemaRegistryClient,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """vector.storage, two dimensions, is no built-in meter: only the catalogue knows it."""
    (tmp_path / "meters.yaml").write_text(METERS)
    (tmp_path / "prices.yaml").write_text(VECTOR_PRICES)
    applied = cli(
        env, "catalogue", "apply", str(tmp_path / "meters.yaml"), str(tmp_path / "prices.yaml")
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[:2] == [
        "+ meter/vector.storage",
        "+ price_version/list-vectors",
    ]
    vectors = {
        **image_event("vectors-1", NOW - timedelta(minutes=1), 0, "cust-0001"),
        "meter": "vector.storage",
        "model": "pgvector",
        "provider": "self-hosted",
        "quantities": {"vector_mb_hours": 500, "queries": 40},
    }
    with UsageProducer(
        kafka_bootstrap, env["METERFLOW_USAGE_TOPIC"], Encoder(registry_client)
    ) as sender:
        sender.send(vectors)
        sender.send({**vectors, "event_id": "vectors-2", "quantities": {"writes": 3}})
    wait_outcomes(2)
    stop_when_written(tail_flow, 1, env)
    assert query(
        env,
        rated="SELECT event_id, quantities, toString(amount), price_version FROM rated_usage "
        "WHERE meter = 'vector.storage'",
        dead="SELECT event_id, reason FROM dead_letters WHERE customer_id = 'cust-0001'",
    ) == {
        "rated": [["vectors-1", {"queries": 1, "vector_mb_hours": 500}, "1.01", "list-vectors"]],
        "dead": [["vectors-2", "unknown_dimension"]],
    }


Sent = tuple[str, int, str | None, dict[str, str], int, int, int]


def test_a_meter_of_max_latest_and_unique_count_priced_by_region(
    env: dict[str, str],
    tail_flow: subprocess.Popen[bytes],
    registry_client: SchemaRegistryClient,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """vector.search through `catalogue apply` only: a peak (max), an index size (latest),
    distinct users (unique_count of properties.user_id), queries (count) and vectors
    scanned (sum), filtered to three regions and priced apart in eu-west. The period's
    totals in ClickHouse are each price x the aggregate of its events, computed here."""
    (tmp_path / "meters.yaml").write_text(SEARCH_METER)
    (tmp_path / "prices.yaml").write_text(SEARCH_PRICES)
    applied = cli(
        env, "catalogue", "apply", str(tmp_path / "meters.yaml"), str(tmp_path / "prices.yaml")
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[:2] == [
        "+ meter/vector.search",
        "+ price_version/list-search",
    ]
    sent: list[Sent] = [  # id, minutes before now, region field, properties, peak, index, scanned
        ("q1", 9, "eu-west", {"user_id": "u1"}, 300, 100, 1_000),
        ("q2", 8, "eu-west", {"user_id": "u2"}, 200, 250, 2_000),
        ("q3", 7, "us-east", {"user_id": "u1"}, 500, 50, 4_000),
        ("q4", 6, None, {"user_id": "u3", "region": "eu-central"}, 100, 70, 8_000),
        ("q5", 5, "ap-south", {"user_id": "u4"}, 900, 900, 16_000),
        ("q6", 10, "eu-west", {"user_id": "u1"}, 350, 120, 32_000),
    ]
    with UsageProducer(
        kafka_bootstrap, env["METERFLOW_USAGE_TOPIC"], Encoder(registry_client)
    ) as sender:
        for event_id, minutes, region, properties, peak, index, scanned in sent:
            quantities = {"queries": 1, "users": 1, "peak_mb": peak, "index_mb": index}
            sender.send({
                **image_event(event_id, NOW - timedelta(minutes=minutes), 0, "cust-0001"),
                "meter": "vector.search", "model": "hnsw", "provider": "pgvector",
                "region": region, "properties": properties,
                "quantities": {**quantities, "scanned": scanned},
            })  # fmt: skip
    wait_outcomes(len(sent))
    stop_when_written(tail_flow, 5, env)
    found = query(
        env,
        rated="SELECT tiers[1] AS priced, sumMap(quantities), toString(sum(amount)) "
        "FROM rated_usage WHERE meter = 'vector.search' GROUP BY priced",
        dead="SELECT event_id, reason FROM dead_letters WHERE customer_id = 'cust-0001'",
    )

    def priced(group: list[Sent], rates: dict[str, Decimal]) -> tuple[dict[str, int], Decimal]:
        latest = min(group, key=lambda e: e[1])
        aggregate = {
            "queries": len(group),
            "users": len({e[3]["user_id"] for e in group}),
            "peak_mb": max(e[4] for e in group),
            "index_mb": latest[5],
            "scanned": sum(e[6] for e in group),
        }
        total = sum((q18(rates[d] * q) for d, q in aggregate.items()), Decimal(0))
        return aggregate, total

    eu = priced([e for e in sent if e[2] == "eu-west"], EU_RATES)
    default = priced([e for e in sent if e[0] in ("q3", "q4")], RATES)
    rated = {note: (quantities, Decimal(total)) for note, quantities, total in found["rated"]}
    assert rated == {"where region: default": default, "where region=eu-west": eu}
    assert found["dead"] == [["q5", "filtered_out"]]
    reconciled = cli(env, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


TURBO_PRICES = f"""
versions:
  - id: list-turbo
    effective_from: {EFFECTIVE.isoformat()}
    prices:
      - {{meter: image.generation, model: sdxl-lightning, rates: {{images: 0.02}}}}
"""


def test_redrive_rates_fixed_dead_letters_exactly_once(
    env: dict[str, str],
    tail_flow: subprocess.Popen[bytes],
    registry_client: SchemaRegistryClient,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """unknown_model dead letters, then the model's price through `catalogue apply`, then
    `redrive` twice and a redrive record sent again by hand: each is rated once."""
    turbo = [
        {
            **image_event(f"turbo-{i}", NOW - timedelta(minutes=5), 10, "cust-0001"),
            "model": "sdxl-lightning",
        }
        for i in (1, 2)
    ]
    with UsageProducer(
        kafka_bootstrap, env["METERFLOW_USAGE_TOPIC"], Encoder(registry_client)
    ) as sender:
        for record in turbo:
            sender.send(record)
    deadline = time.monotonic() + 40
    while len(read_to_end(kafka_bootstrap, env["METERFLOW_DEAD_LETTER_TOPIC"])) < 2:
        assert time.monotonic() < deadline, "the dead letters never reached their topic"
        time.sleep(0.3)
    (tmp_path / "prices.yaml").write_text(TURBO_PRICES)
    assert cli(env, "catalogue", "apply", str(tmp_path / "prices.yaml")).returncode == 0

    first = cli(env, "redrive", "--reason", "unknown_model")
    assert first.stdout.splitlines()[0].endswith(": 2 (unknown_model 2)"), first.stderr
    wait_for("meterflow_produce_to_queryable_seconds_count", 2)
    second = cli(env, "redrive", "--reason", "unknown_model")
    assert second.stdout.splitlines() == [
        f"redriven to {env['METERFLOW_REDRIVE_TOPIC']}: 0 (none)",
        "skipped: 2 already redriven, 0 never decoded (their producer must send them again)",
    ]
    again = read_to_end(kafka_bootstrap, env["METERFLOW_REDRIVE_TOPIC"])[0]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(env["METERFLOW_REDRIVE_TOPIC"], again.value, key=b"cust-0001")
    assert producer.flush(30) == 0
    wait_for("meterflow_duplicates_total", 1)
    stop_when_written(tail_flow, 2, env)

    result = query(
        env,
        rated="SELECT event_id, toString(amount), topic, redrive_of FROM rated_usage "
        "WHERE model = 'sdxl-lightning' ORDER BY event_id",
        dead="SELECT event_id, reason, concat(topic, '/', toString(partition), '/', "
        "toString(offset)) FROM dead_letters ORDER BY event_id",
        duplicates="SELECT event_id, topic FROM duplicates",
    )
    originals = {event_id: where for event_id, reason, where in result["dead"]}
    assert {reason for _, reason, _ in result["dead"]} == {"unknown_model"}
    assert result["rated"] == [
        [event_id, "0.2", env["METERFLOW_REDRIVE_TOPIC"], originals[event_id]]
        for event_id in ("turbo-1", "turbo-2")
    ]
    assert [topic for _, topic in result["duplicates"]] == [env["METERFLOW_REDRIVE_TOPIC"]]
    reconciled = cli(env, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "    of which redriven and rated: 2" in reconciled.stdout.splitlines()
