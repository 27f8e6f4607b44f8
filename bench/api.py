"""`meterflow bench --api`: the HTTP API on loopback against the direct producer, and
entitlement latency on a database of ten million rated rows.

Bounded and local: a fixed number of requests from a few client threads to API servers
this command starts on 127.0.0.1 (`meterflow serve` in a process of its own for ingest,
one in this process for the reads, which holds the filled chDB), on the local stack.
Prints `name value` lines:

- ingest events/s through `POST /v1/events` in batches of 100 and of 1,000 (every event
  acknowledged by Kafka before its answer), and each as a ratio of the rate of the
  producer SDK sending the same events directly, measured in the same run;
- entitlement and balance latency p50/p99 over HTTP, and the reads alone in process,
  on a fresh database filled with `rated_rows` synthetic rated rows (default 10 million)
  for the catalogue's 24 customers, all in the current billing period (the month's
  worst case: a full period of minutes in the roll-ups), through the same materialized
  views the flow's inserts go through.
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from api.auth import OPERATOR, ApiKey
from flows import runner
from flows.producing import open_producer
from flows.settings import Settings
from infra import stack
from metering.rating.books import load_books
from reports.balance import balance, standing
from schemas.jsonform import dump_line
from sinks.clickhouse import connect

CLIENTS = 4
CUSTOMERS = [f"cust-{i:04d}" for i in range(1, 25)]
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")
PERIOD_SECONDS = 31 * 86_400


def bench_api(settings: Settings, events: int, rated_rows: int, checks: int) -> None:
    stack.up(settings.stack())
    settings = runner.fresh_run(settings, "bench_api")
    records = [_event(i) for i in range(events)]

    started = time.monotonic()
    with open_producer(settings) as producer:
        for record in records:
            producer.send(record)
    direct = events / (time.monotonic() - started)
    assert not producer.report.failed, producer.report.failed[0]
    _figure("producer.events_per_second", direct)

    key = secrets.token_urlsafe(24)
    with _serve_process(settings, key) as url:
        for size in (100, 1000):
            rate = _ingest_rate(url, key, records, size, f"b{size}-")
            _figure(f"api.ingest_batch_{size}.events_per_second", rate)
            _figure(f"api.ingest_batch_{size}.ratio_to_producer", rate / direct)
    with _server(settings, key) as url:
        client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
        fill_seconds = _fill(client, rated_rows)
        rows = int(client.query("SELECT count() FROM rated_usage").result_rows[0][0])
        _figure("rated_rows", rows)
        _figure("fill_seconds", fill_seconds)
        _figure("merges_wait_seconds", _settle(client, settings.clickhouse_database))
        for name in ("entitlement", "balance"):
            latencies = _latencies(url, key, name, checks)
            _figure(f"api.{name}.p50_ms", _percentile(latencies, 50))
            _figure(f"api.{name}.p99_ms", _percentile(latencies, 99))
        books = load_books(settings.prices_file, settings.contracts_file, settings.costs_file)
        for name, read in (("entitlement", standing), ("balance", balance)):
            reads = []
            for i in range(checks):
                customer = books.contracts.customers[CUSTOMERS[i % len(CUSTOMERS)]]
                started = time.perf_counter()
                read(client, books, customer, datetime.now(UTC))
                reads.append(1000 * (time.perf_counter() - started))
            _figure(f"read.{name}.p50_ms", _percentile(reads, 50))
            _figure(f"read.{name}.p99_ms", _percentile(reads, 99))


def _event(i: int, prefix: str = "direct-") -> dict[str, Any]:
    return {
        "event_id": f"{prefix}{i}",
        "timestamp": datetime.now(UTC) - timedelta(seconds=1),
        "customer_id": CUSTOMERS[i % len(CUSTOMERS)],
        "project_id": None,
        "feature": "bench",
        "meter": "llm.tokens",
        "model": MODELS[i % len(MODELS)],
        "provider": "openai",
        "mode": "realtime",
        "quantities": {"input_tokens": 1000 + i % 7, "output_tokens": 200},
        "properties": {},
        "region": None,
    }


@contextmanager
def _serve_process(settings: Settings, key: str) -> Iterator[str]:
    """`meterflow serve` in a process of its own, as deployed, so the clients here do not
    share its interpreter; it opens no database to take events."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "METERFLOW_API_KEYS": f"{key}={OPERATOR}",
        "METERFLOW_API_RATE_LIMIT": "1000000",
        "METERFLOW_USAGE_TOPIC": settings.usage_topic,
        "METERFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "METERFLOW_REGISTRY_URL": settings.registry_url,
    }
    command = [sys.executable, "-m", "commands.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("meterflow serve did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def _server(settings: Settings, key: str) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread of this process, which holds the chDB
    database it filled (chDB is one process per data path)."""
    app = create_app(settings.model_copy(update={"api_rate_limit": 1e6}), [ApiKey(key, OPERATOR)])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start within 30 s")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def _ingest_rate(
    url: str, key: str, records: list[dict[str, Any]], size: int, prefix: str
) -> float:
    """Events a second through the API: `CLIENTS` threads post every record once."""
    bodies = []
    for start in range(0, len(records), size):
        batch = [r | {"event_id": prefix + r["event_id"]} for r in records[start : start + size]]
        bodies.append(("[" + ",".join(dump_line(r) for r in batch) + "]").encode())
    done: list[int] = []

    def post(share: list[bytes]) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for body in share:
                answer = http.post("/v1/events", content=body)
                if answer.status_code != 202:
                    raise RuntimeError(f"ingest answered {answer.status_code}: {answer.text}")
                done.append(answer.json()["accepted"])

    seconds = _parallel(post, bodies)
    if sum(done) != len(records):
        raise RuntimeError(f"{sum(done)} of {len(records)} events accepted")
    return len(records) / seconds


def _parallel(work: Callable[[list[bytes]], None], items: list[bytes]) -> float:
    threads = [threading.Thread(target=work, args=(items[i::CLIENTS],)) for i in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def _settle(client: Any, database: str, limit: float = 300.0) -> float:
    """Wait (at most `limit` seconds) for the merges the fill started: a steady state, not
    the minutes after ten million rows arrived at once."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        query = f"SELECT count() FROM system.merges WHERE database = '{database}'"
        if not client.query(query).result_rows[0][0]:
            break
        time.sleep(1)
    return time.monotonic() - started


def _latencies(url: str, key: str, name: str, count: int) -> list[float]:
    """Milliseconds per request, after as many unmeasured requests as customers."""
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        for customer in CUSTOMERS:
            http.get(f"/v1/customers/{customer}/{name}")
        for i in range(count):
            started = time.perf_counter()
            answer = http.get(f"/v1/customers/{CUSTOMERS[i % len(CUSTOMERS)]}/{name}")
            out.append(1000 * (time.perf_counter() - started))
            if answer.status_code not in (200, 402):
                raise RuntimeError(f"{name} answered {answer.status_code}: {answer.text}")
    return out


def _fill(client: Any, rows: int) -> float:
    """Synthetic rated rows in this calendar month, through the tables' views."""
    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    started = time.monotonic()
    client.command(
        f"""
        INSERT INTO rated_usage (stream, position, topic, partition, offset, event_id,
            customer_id, timestamp, period_start, meter, model, provider, mode, project_id,
            feature, quantities, unit_prices, amounts, tiers, amount, discount,
            credits_applied, billable_amount, cost, margin, currency, price_version,
            contract_version, cost_version, late, lateness_ms, adjustment, kafka_timestamp,
            rated_at)
        SELECT 'bench', number, 'bench', 0, number, concat('r', toString(number)),
            concat('cust-', leftPad(toString(1 + number % 24), 4, '0')),
            toDateTime64({start.timestamp():.0f} + (number * 7919) % {PERIOD_SECONDS}, 6, 'UTC'),
            toDateTime64({start.timestamp():.0f}, 3, 'UTC'), 'llm.tokens',
            ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4'][1 + number % 3], 'openai', 'realtime',
            NULL, 'bench', map('input_tokens', toUInt64(1000)),
            map('input_tokens', toDecimal128('0.0000025', 18)),
            map('input_tokens', toDecimal128('0.0025', 18)), [], toDecimal128('0.0025', 18),
            toDecimal128(0, 18), toDecimal128(0, 18), toDecimal128('0.0025', 18),
            toDecimal128('0.001', 18), toDecimal128('0.0015', 18), 'USD', 'bench', NULL, NULL,
            false, 0, false, now64(3), now64(3)
        FROM numbers({rows})
        """
    )
    return time.monotonic() - started


def _percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def _figure(name: str, value: float) -> None:
    print(f"bench_api.{name} {value:.3f}", flush=True)
