"""Helpers of the API tests: real `meterflow serve` processes on loopback, the real
broker and registry, and a real flow run between ingest and the queries.

With embedded chDB one process owns a data path, so the order is: a server takes the
events (it opens no database for that), stops; the flow meters them into the path;
`meterflow usage`, `meterflow statement` and a reader script read it; then a second
server answers every query from it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from infra import stack

KEYS = {
    "operator": "op-" + uuid.uuid4().hex,
    "cust-0001": "c1-" + uuid.uuid4().hex,
    "cust-0008": "c8-" + uuid.uuid4().hex,
    "cust-0015": "c15-" + uuid.uuid4().hex,
}
H100_HOUR_MS = 3_600_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def auth(scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[scope]}"}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def start_server(env: dict[str, str]) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "commands.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "meterflow serve exited"
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return Server(process, url)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("meterflow serve did not answer within 60 s")


def event(
    event_id: str,
    customer: str,
    meter: str,
    model: str,
    quantities: dict[str, Any],
    at: datetime,
    **extra: Any,
) -> dict[str, Any]:
    provider = {"gpt-4o": "openai", "h100": "lambda", "sdxl": "stability"}.get(model, "anthropic")
    return {
        "event_id": event_id,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "customer_id": customer,
        "meter": meter,
        "model": model,
        "provider": provider,
        "quantities": quantities,
        **extra,
    }


READ = """
import json
from flows.settings import Settings
from sinks.clickhouse import connect
s = Settings()
c = connect(s.clickhouse_dsn, s.clickhouse_database)
raw = c.query("SELECT event_id FROM raw_events WHERE topic = %(t)s",
              parameters={"t": s.usage_topic}).result_rows
raw = [r[0] for r in raw]
dup = [r[0] for r in c.query("SELECT event_id FROM duplicates").result_rows]
print(json.dumps({"raw": raw, "duplicates": dup}))
"""


@dataclass
class World:
    env: dict[str, str]
    server: Server
    now: datetime
    sent: dict[str, httpx.Response] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Any] = field(default_factory=dict)
    statement_json: dict[str, Any] = field(default_factory=dict)
    statement_csv: str = ""
    period: str = ""
    folder: Path = Path()


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.stdout


def _ingest(server: Server, now: datetime) -> dict[str, httpx.Response]:
    at = now - timedelta(seconds=30)
    tokens = {"input_tokens": 12_000, "cached_input_tokens": 3_000, "output_tokens": 2_500}
    cust1 = [
        event(
            f"c1-{i}",
            "cust-0001",
            "llm.tokens",
            model,
            tokens,
            at - timedelta(minutes=i % 3),
            **({"feature": "chat", "project_id": "p1"} if i % 2 else {}),
        )
        for i, model in enumerate(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4"] * 4)
    ]
    invalid = [
        event("bad-neg", "cust-0001", "llm.tokens", "gpt-4o", {"input_tokens": -5}, at),
        event("bad-meter", "cust-0001", "teleport", "gpt-4o", {"hops": 1}, at),
        "not an object",
    ]
    capped = [
        event(f"c8-{i}", "cust-0008", "gpu.time", "h100", {"gpu_ms": 200 * H100_HOUR_MS}, at)
        for i in range(3)
    ]
    with server.client() as http:
        sent = {
            "grant": http.post(
                "/v1/customers/cust-0015/grants",
                json={
                    "grant_id": "api-grant-1",
                    "credits": "100",
                    "effective_at": (now - timedelta(hours=1)).isoformat(),
                },
                headers=auth("operator"),
            ),
            "batch": http.post("/v1/events", json=cust1 + invalid, headers=auth("operator")),
            "capped": http.post("/v1/events", json=capped, headers=auth("cust-0008")),
            "credits": http.post(
                "/v1/events",
                json=[
                    event("c15-0", "cust-0015", "image.generation", "sdxl", {"images": 30}, at),
                    event("c15-1", "cust-0015", "llm.tokens", "gpt-4o", tokens, at),
                    event("c15-2", "cust-0015", "llm.tokens", "gpt-4o-mini", tokens, at),
                ],
                headers=auth("cust-0015"),
            ),
            "duplicate": http.post("/v1/events", json=cust1[0], headers=auth("cust-0001")),
        }
    return sent


def build_world(kafka_bootstrap: str, folder: Path) -> World:
    """Ingest through one server, meter, read with the CLI, start the querying server."""
    suffix = uuid.uuid4().hex[:8]
    usage, grants = f"api-usage-{suffix}", f"api-grants-{suffix}"
    stack.create_topics(kafka_bootstrap, {usage: 4, grants: 4})
    keys = folder / "keys"
    keys.write_text("".join(f"{key}={scope}\n" for scope, key in KEYS.items()))
    env = {
        **os.environ,
        "METERFLOW_USAGE_TOPIC": usage,
        "METERFLOW_CREDIT_GRANTS_TOPIC": grants,
        "METERFLOW_CLICKHOUSE_DSN": f"chdb://{folder / 'chdb'}",
        "METERFLOW_RECOVERY_DIR": str(folder / "recovery"),
        "METERFLOW_SNAPSHOT_SECONDS": "0.5",
        "METERFLOW_SINK_FLUSH_SECONDS": "0.2",
        "METERFLOW_API_KEYS_FILE": str(keys),
        "METERFLOW_METRICS_PORT": str(free_port()),
    }
    now = datetime.now(UTC)
    taking = start_server(env)
    try:
        sent = _ingest(taking, now)
    finally:
        taking.stop()
    _cli(env, "run", "--until-end")
    period = now.strftime("%Y-%m")
    csv_file, json_file = folder / "statement.csv", folder / "statement.json"
    _cli(
        env, "statement", "--customer", "cust-0001", "--period", period,
        "--csv", str(csv_file), "--json", str(json_file),
    )  # fmt: skip
    written = json.loads(subprocess.run(
        [sys.executable, "-c", READ], env=env, check=True, capture_output=True, timeout=120
    ).stdout)  # fmt: skip
    world = World(
        env=env,
        server=start_server(env),
        now=now,
        sent=sent,
        usage=json.loads(_cli(env, "usage")),
        written=written,
        statement_json=json.loads(json_file.read_text()),
        statement_csv=csv_file.read_text(),
        period=period,
        folder=folder,
    )
    return world
