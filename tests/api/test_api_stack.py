"""The API on the real stack, through real HTTP servers: ingest, queries against
`meterflow usage` and `meterflow statement`, entitlement, keys, and a broker that is down."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from apiworld import KEYS, World, auth, event, free_port, start_server

pytestmark = pytest.mark.stack

MONEY = ("amount", "discount", "credits_applied", "billable_amount", "cost", "margin")


@pytest.fixture
def http(world: World) -> Iterator[httpx.Client]:
    with world.server.client() as client:
        yield client


def statuses(response: httpx.Response) -> dict[str, dict[str, Any]]:
    return {s["event_id"] or f"#{s['index']}": s for s in response.json()["events"]}


def test_ingest_reports_every_event_with_the_flows_reasons(world: World) -> None:
    batch = world.sent["batch"]
    assert batch.status_code == 202, batch.text
    by_id = statuses(batch)
    assert [by_id[f"c1-{i}"]["status"] for i in range(12)] == ["accepted"] * 12
    assert by_id["bad-neg"]["reason"] == "negative_quantity"
    assert by_id["bad-meter"]["reason"] == "unknown_meter"
    assert by_id["#14"] == {
        "index": 14,
        "event_id": None,
        "status": "rejected",
        "reason": "malformed_json",
        "detail": "a usage event must be a JSON object",
    }
    assert batch.json()["accepted"] == 12 and batch.json()["rejected"] == 3
    for name in ("capped", "credits", "duplicate", "grant"):
        assert world.sent[name].status_code == 202, world.sent[name].text


def test_every_accepted_id_reaches_raw_events_and_the_resend_is_a_duplicate(
    world: World,
) -> None:
    accepted = [
        s["event_id"]
        for name in ("batch", "capped", "credits", "duplicate")
        for s in world.sent[name].json()["events"]
        if s["status"] == "accepted"
    ]
    assert sorted(world.written["raw"]) == sorted(accepted)
    assert world.written["duplicates"] == ["c1-0"]
    assert "bad-neg" not in world.written["raw"]


def test_usage_equals_meterflow_usage_to_the_last_digit(world: World, http: httpx.Client) -> None:
    customers = world.usage["money"]
    assert set(customers) == {"cust-0001", "cust-0008", "cust-0015"}
    for customer, money in customers.items():
        answer = http.get(
            f"/v1/customers/{customer}/usage",
            params={"from": "2000-01-01T00:00:00Z", "window": "month"},
            headers=auth("operator"),
        )
        assert answer.status_code == 200, answer.text
        totals = answer.json()["totals"]
        assert {m: Decimal(totals[m]) for m in MONEY} == {m: Decimal(money[m]) for m in MONEY}


def test_usage_per_model_and_day_adds_up_to_the_quantities_rated(
    world: World, http: httpx.Client
) -> None:
    answer = http.get(
        "/v1/customers/cust-0001/usage",
        params={"window": "hour", "group_by": "model,meter"},
        headers=auth("cust-0001"),
    ).json()
    assert answer["time_zone"] == "UTC"
    got: dict[str, int] = {}
    for w in answer["windows"]:
        for dimension, quantity in w["quantities"].items():
            name = f"cust-0001|{w['meter']}|{w['model']}|{dimension}"
            got[name] = got.get(name, 0) + quantity
    want = {k: v for k, v in world.usage["quantities"].items() if k.startswith("cust-0001|")}
    assert got == want
    by_feature = http.get(
        "/v1/customers/cust-0001/usage",
        params={"window": "minute", "group_by": "feature,project"},
        headers=auth("cust-0001"),
    ).json()
    groups = {(w["feature"], w["project"]) for w in by_feature["windows"]}
    assert groups == {("chat", "p1"), (None, None)}
    assert by_feature["totals"] == answer["totals"]
    assert answer["totals"]["events"] == 12


def test_balance_is_this_periods_spend_and_the_credits_left(
    world: World, http: httpx.Client
) -> None:
    capped = http.get("/v1/customers/cust-0008/balance", headers=auth("cust-0008")).json()
    spend = capped["spend"]
    billable = Decimal(world.usage["money"]["cust-0008"]["billable_amount"])
    assert Decimal(spend["billable_amount"]) == billable == Decimal(2700)
    assert (spend["budget"], spend["hard_cap"]) == ("2000", True)
    fired = {(a["kind"], a["threshold"]): a["fired"] for a in capped["alerts"]}
    assert fired == {
        ("budget_soft", "50"): True,
        ("budget_soft", "80"): True,
        ("budget_soft", "90"): True,
        ("budget_hard_cap", "2000"): True,
    }
    credits = http.get("/v1/customers/cust-0015/balance", headers=auth("cust-0015")).json()
    used = Decimal(world.usage["money"]["cust-0015"]["credits_applied"])
    assert credits["credits"] | {"used": Decimal(credits["credits"]["used"])} == {
        "prepaid": True,
        "granted": "1",
        "used": used,
        "expired": "0",
        "remaining": "0",
    }
    assert used == Decimal(1)


def test_entitlement_refuses_a_capped_customer_and_exhausted_credits_with_402(
    http: httpx.Client,
) -> None:
    capped = http.get("/v1/customers/cust-0008/entitlement", headers=auth("cust-0008"))
    assert capped.status_code == 402
    assert capped.json()["allowed"] is False and capped.json()["reason"] == "hard_cap_reached"
    prepaid = http.get("/v1/customers/cust-0015/entitlement", headers=auth("operator"))
    assert (prepaid.status_code, prepaid.json()["reason"]) == (402, "credits_exhausted")
    listed = http.get("/v1/customers/cust-0001/entitlement", headers=auth("cust-0001"))
    assert listed.status_code == 200 and listed.json()["allowed"] is True


def test_statements_equal_meterflow_statement_as_json_and_csv(
    world: World, http: httpx.Client
) -> None:
    path = f"/v1/customers/cust-0001/statements/{world.period}"
    as_json = http.get(path, headers=auth("cust-0001"))
    assert as_json.json() == world.statement_json
    as_csv = http.get(path, headers=auth("cust-0001") | {"Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text == world.statement_csv


def test_wrong_keys_get_401_and_other_customers_403(world: World, http: httpx.Client) -> None:
    assert http.get("/v1/customers/cust-0001/balance").status_code == 401
    wrong = {"Authorization": f"Bearer {KEYS['cust-0001']}x"}
    assert http.get("/v1/customers/cust-0001/balance", headers=wrong).status_code == 401
    assert http.get("/v1/customers/cust-0008/usage", headers=auth("cust-0001")).status_code == 403
    other = event("x-1", "cust-0008", "api.call", "search-api", {"calls": 1}, world.now)
    assert http.post("/v1/events", json=other, headers=auth("cust-0001")).status_code == 403
    grant = {"credits": "5"}
    posted = http.post("/v1/customers/cust-0015/grants", json=grant, headers=auth("cust-0015"))
    assert posted.status_code == 403
    path = f"/v1/customers/cust-0008/statements/{world.period}"
    assert http.get(path, headers=auth("cust-0001")).status_code == 403
    assert http.get("/portal", params={"key": "nope-" * 5}).status_code == 401
    assert http.get("/portal?customer=cust-0008", headers=auth("cust-0001")).status_code == 403


def test_bad_bodies_get_400_and_413_and_openapi_is_served(http: httpx.Client) -> None:
    bad = http.post("/v1/events", content=b"{not json", headers=auth("operator"))
    assert bad.status_code == 400 and "malformed_json" in bad.json()["detail"]
    huge = http.post("/v1/events", content=b"[" + b" " * (5 << 20) + b"]", headers=auth("operator"))
    assert huge.status_code == 413
    assert http.post("/v1/events", json=[], headers=auth("operator")).status_code == 400
    assert "/v1/customers/{customer_id}/entitlement" in http.get("/openapi.json").json()["paths"]
    assert http.get("/docs").status_code == 200


@pytest.mark.parametrize("down", ["broker", "registry"])
def test_503_with_retry_after_when_kafka_or_the_registry_is_down(world: World, down: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    outage = {
        "broker": {"METERFLOW_KAFKA_BOOTSTRAP": closed},
        "registry": {"METERFLOW_REGISTRY_URL": f"http://{closed}/apis/ccompat/v7"},
    }[down]
    env = world.env | outage | {"METERFLOW_API_PRODUCE_TIMEOUT": "PT2S"}
    server = start_server(env)
    try:
        with server.client() as http:
            events = [
                event(f"down-{i}", "cust-0001", "api.call", "search-api", {"calls": 1}, world.now)
                for i in range(5)
            ]
            answer = http.post("/v1/events", json=events, headers=auth("operator"))
    finally:
        server.stop()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    body = answer.json()
    assert (body["accepted"], body["unavailable"]) == (0, 5)
    assert {s["status"] for s in body["events"]} == {"unavailable"}


def test_each_key_has_a_rate_limit(world: World) -> None:
    server = start_server(world.env | {"METERFLOW_API_RATE_LIMIT": "1"})
    try:
        with server.client() as http:
            codes = [
                http.post("/v1/events", content=b"{", headers=auth("operator")).status_code
                for _ in range(4)
            ]
            other = http.post("/v1/events", content=b"{", headers=auth("cust-0001"))
            limited = http.post("/v1/events", content=b"{", headers=auth("operator"))
    finally:
        server.stop()
    assert codes[:2] == [400, 400] and 429 in codes[2:]
    assert other.status_code == 400, "another key has its own bucket"
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_no_keys_is_one_clear_line(world: World) -> None:
    env = {k: v for k, v in world.env.items() if not k.startswith("METERFLOW_API_KEYS")}
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "meterflow serve: no API keys: set METERFLOW_API_KEYS or METERFLOW_API_KEYS_FILE"
    )
