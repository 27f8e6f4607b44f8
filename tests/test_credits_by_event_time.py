"""Credits on the real stack: a grant sent before the usage it covers is drawn, whatever
order the flow polls the two topics in, expiry follows event time, and the lines, the
lapse and the alerts are exact, in one run and in a run killed midway.

cust-0015 is on the credits plan: sdxl at 5 credits an image, 1 credit = 0.01 USD,
thresholds 50/80/100 %, a low-balance line at 200 credits, allowed lateness 10 minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from flows.settings import Settings
from infra import stack
from schemas.producer import UsageProducer
from schemas.serde import Encoder
from tests.image_events import image_event

pytestmark = pytest.mark.stack

CUSTOMER = "cust-0015"
FILLER = 30_000
"""List-price events of another customer after the credits customer's, so a run lasts
long enough to be killed inside it."""
OTHER_GRANTS = 12_000
"""Grants of another customer ahead of the one that matters, in the same partition: the
flow reads that grant only after several batches, long after the usage it covers."""
T0 = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
GRANT = {
    "grant_id": "g-event-time",
    "customer_id": CUSTOMER,
    "credits": "1000",
    "effective_at": T0.isoformat(),
    "expires_at": (T0 + timedelta(hours=24)).isoformat(),
}
USAGE = [
    ("e0", T0 - timedelta(hours=1), 10),  # before the grant: 0.50 billable
    *((f"e{k}", T0 + timedelta(hours=k), 20) for k in range(1, 7)),  # 1.00 each from the grant
    ("e7", T0 + timedelta(hours=24, minutes=5), 20),  # after expiry: 1.00 billable
    ("e8", T0 + timedelta(hours=23, minutes=59), 20),  # late, within lateness: from the grant
    ("e9", T0 + timedelta(hours=25), 20),  # moves the watermark past expiry: the grant lapses
]
"""(event id, event time, images) in send order."""
CREDITS = {"e1": "1", "e2": "1", "e3": "1", "e4": "1", "e5": "1", "e6": "1", "e8": "1"}
BILLABLE = {"e0": "0.5", "e7": "1", "e9": "1"}


@pytest.fixture(scope="module")
def topics(
    settings: Settings,
    kafka_bootstrap: str,
    registry_client: SchemaRegistryClient,
) -> tuple[str, str]:
    """The grant first, acknowledged, behind other grants; then the customer's usage, in
    order, then filler: the usage reaches the shard before the grant does."""
    usage, grants = (
        f"credits-usage-{uuid.uuid4().hex[:8]}",
        f"credits-grants-{uuid.uuid4().hex[:8]}",
    )
    stack.create_topics(kafka_bootstrap, {usage: 4, grants: 4})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 50})
    for i in range(OTHER_GRANTS):
        other = {**GRANT, "grant_id": f"g-other-{i}", "customer_id": "cust-0016"}
        producer.produce(grants, json.dumps(other).encode(), partition=0)
    producer.produce(grants, json.dumps(GRANT).encode(), key=CUSTOMER.encode(), partition=0)
    assert producer.flush(30) == 0
    at = T0 - timedelta(hours=2)
    with UsageProducer(kafka_bootstrap, usage, Encoder(registry_client)) as sender:
        for event_id, event_at, images in USAGE:
            sender.send(image_event(event_id, event_at, images, CUSTOMER))
        for i in range(FILLER):
            sender.send(image_event(f"f{i}", at + timedelta(seconds=i), 1, "cust-0001"))
    assert sender.report.delivered == FILLER + len(USAGE) and not sender.report.failed
    return usage, grants


def flow_env(topics: tuple[str, str], folder: Path) -> dict[str, str]:
    usage, grants = topics
    return {
        **os.environ,
        "METERFLOW_USAGE_TOPIC": usage,
        "METERFLOW_CREDIT_GRANTS_TOPIC": grants,
        "METERFLOW_CLICKHOUSE_DSN": f"chdb://{folder / 'chdb'}",
        "METERFLOW_RECOVERY_DIR": str(folder / "recovery"),
        "METERFLOW_SNAPSHOT_SECONDS": "0.5",
        "METERFLOW_SINK_FLUSH_SECONDS": "0.2",
    }


READ = """
import json
from flows.settings import Settings
from infra import stack
from sinks.clickhouse import connect
s = Settings()
c = connect(s.clickhouse_dsn, s.clickhouse_database)
where = "WHERE customer_id = 'cust-0015'"
lines = c.query("SELECT event_id, toString(credits_applied), toString(billable_amount), "
                f"count() FROM rated_usage {where} GROUP BY ALL").result_rows
lapses = c.query("SELECT grant_id, toString(credits), toString(amount), toString(expires_at) "
                 f"FROM credit_expiries {where}").result_rows
alerts = c.query(f"SELECT kind, toString(threshold), toString(value), toString(at) FROM alerts "
                 f"{where} ORDER BY at, kind").result_rows
print(json.dumps({"lines": lines, "lapses": lapses, "alerts": alerts}))
"""


def written(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", READ], env=env, check=True, capture_output=True, timeout=120
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run_flow(env: dict[str, str], kill_after: float | None = None) -> int:
    command = [sys.executable, "-m", "commands.cli", "run", "--until-end"]
    process = subprocess.Popen(command, env=env)
    if kill_after is None:
        return process.wait(timeout=600)
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=60)


def expected() -> dict[str, Any]:
    """By hand: 1.00 an event of 20 images (100 credits), 0.50 for e0's 10; the grant
    lapses with 300 credits (3.00) left, which takes the balance under 200 credits."""
    expiry = (T0 + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M:%S")
    crossed_half = (T0 + timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S")
    return {
        "lines": {
            event_id: (Decimal(CREDITS.get(event_id, "0")), Decimal(BILLABLE.get(event_id, "0")), 1)
            for event_id, _, _ in USAGE
        },
        "lapses": [("g-event-time", Decimal(300), Decimal(3), expiry)],
        "alerts": [
            ("credit_threshold", Decimal(50), Decimal(50), crossed_half),
            ("credit_low", Decimal(200), Decimal(0), expiry),
        ],
    }


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """Decimal values, so the comparison is exact to the last of the 18 digits."""
    return {
        "lines": {row[0]: (Decimal(row[1]), Decimal(row[2]), row[3]) for row in result["lines"]},
        "lapses": [
            (row[0], Decimal(row[1]), Decimal(row[2]), row[3][:19]) for row in result["lapses"]
        ],
        "alerts": [
            (row[0], Decimal(row[1]), Decimal(row[2]), row[3][:19]) for row in result["alerts"]
        ],
    }


def test_a_grant_sent_before_usage_is_drawn_in_one_run(
    topics: tuple[str, str], tmp_path: Path
) -> None:
    env = flow_env(topics, tmp_path)
    assert run_flow(env) == 0
    assert comparable(written(env)) == expected()


def test_a_run_killed_midway_bills_the_same_to_the_last_digit(
    topics: tuple[str, str], tmp_path: Path
) -> None:
    env = flow_env(topics, tmp_path)
    assert run_flow(env, kill_after=4.0) == -signal.SIGKILL
    assert run_flow(env) == 0
    assert comparable(written(env)) == expected()
