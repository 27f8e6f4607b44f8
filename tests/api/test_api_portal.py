"""The usage page in Debian's headless Chromium: the numbers its charts drew are the API's.

The screenshot is written to the test's tmp folder and copied to
`~/.cache/meterflow/screenshots/portal.png` (under `METERFLOW_HOME`'s parent default).
"""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from apiworld import KEYS, World, auth

pytestmark = pytest.mark.stack

CHROMIUM = shutil.which("chromium")
CUSTOMER = "cust-0015"
SCREENSHOT = Path.home() / ".cache" / "meterflow" / "screenshots" / "portal.png"


class Figures(HTMLParser):
    """Every element's data-* attributes, keyed by the chart or table it belongs to."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, str]] = {}
        self.gauges: dict[str, tuple[str, str]] = {}
        self._chart = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg" and "data-chart" in a:
            self._chart = a["data-chart"]
            if "gauge" in a.get("class", ""):
                self.gauges[self._chart] = (a["data-value"], a["data-limit"])
            else:
                self.charts[self._chart] = {}
        elif tag == "table":
            self._chart = a["data-table"]
            self.charts[self._chart] = {}
        elif "data-label" in a:
            self.charts[self._chart][a["data-label"]] = a["data-value"]
        elif "data-field" in a:
            self.charts[self._chart][a["data-field"]] = a["data-value"]


def chromium(url: str, profile: Path, *mode: str) -> str:
    assert CHROMIUM, "Debian's chromium is not installed (bash infra/dev.sh test installs it)"
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=800,1500",
            "--virtual-time-budget=5000",
            *mode,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_the_portal_draws_the_apis_numbers_in_chromium(world: World, tmp_path: Path) -> None:
    url = f"{world.server.url}/portal?key={KEYS[CUSTOMER]}"
    shot = tmp_path / "portal.png"
    chromium(url, tmp_path / "profile", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOT)
    page = Figures()
    dom = chromium(url, tmp_path / "profile", "--dump-dom")
    page.feed(dom)
    assert 'data-reason="credits_exhausted"' in dom

    with world.server.client() as http:
        key = auth(CUSTOMER)
        base = f"/v1/customers/{CUSTOMER}"
        daily = http.get(f"{base}/usage", params={"window": "day"}, headers=key).json()
        models = http.get(
            f"{base}/usage",
            params={"window": "month", "group_by": "model", "meter": "llm.tokens"},
            headers=key,
        ).json()
        standing = http.get(f"{base}/balance", headers=key).json()
        statement = http.get(f"{base}/statements/{world.period}", headers=key).json()

    assert page.charts["daily-spend"] == {
        w["window_start"][:10]: w["billable_amount"] for w in daily["windows"]
    }
    tokens = {w["model"]: str(sum(w["quantities"].values())) for w in models["windows"]}
    assert page.charts["tokens-by-model"] == tokens
    assert set(tokens) == {"gpt-4o", "gpt-4o-mini"}
    assert page.gauges["spend"] == (standing["spend"]["billable_amount"], "")
    credits = standing["credits"]
    assert page.gauges["credits"] == (credits["remaining"], credits["granted"])
    assert page.charts["credits-table"] == {
        name: credits[name] for name in ("granted", "used", "expired", "remaining")
    }
    assert page.charts["statement"]["total due"] == statement["total_due"]
    assert Decimal(page.charts["statement"]["usage billable"]) == Decimal(
        statement["usage"]["billable_amount"]
    )


def test_the_portal_cookie_downloads_the_statement_csv(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=60) as browser:
        page = browser.get("/portal", params={"key": KEYS[CUSTOMER]})
        assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
        link = f"/v1/customers/{CUSTOMER}/statements/{world.period}?format=csv"
        assert f'href="{link}"' in page.text
        download = browser.get(link)
    with world.server.client() as http:
        direct = http.get(link, headers=auth(CUSTOMER))
    assert download.status_code == 200 and download.text == direct.text
    assert download.text.startswith("section,period_start,meter")
