"""The benchmark runs and prints its figures in the `name value` form."""

from __future__ import annotations

import gc

import pytest

from bench.rating import bench_customers, bench_rating
from flows import collector


def test_bench_prints_events_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    bench_rating(2_000)
    lines = capsys.readouterr().out.split("\n")
    names = [line.split()[0] for line in lines if line]
    assert names == ["rating.batch_events_per_second", "rating.mixed_batch_events_per_second"]
    assert all(int(line.split()[1]) > 0 for line in lines if line)


def test_bench_customers_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    share = bench_customers(customers=300, events=600)
    figures = dict(line.split() for line in capsys.readouterr().out.split("\n") if line)
    assert list(figures) == [
        f"rating.customers_{count}.{name}"
        for count in (24, 300)
        for name in (
            "catalogue_seconds",
            "customers_rated",
            "events_per_second",
            "seen_events_per_second",
            "skewed_events_per_second",
            "skewed_seen_events_per_second",
            "floor_ns",
        )
    ] + [
        f"rating.customers_300_to_24{suffix}" for suffix in ("", ".seen", ".skewed", ".skewed_seen")
    ]
    assert figures["rating.customers_24.customers_rated"] == "24"
    assert 24 < int(figures["rating.customers_300.customers_rated"]) <= 300
    assert float(figures["rating.customers_300_to_24"]) == round(share, 3) > 0


def test_benchmarks_run_under_the_flows_collector_policy_and_give_the_process_its_own_back() -> (
    None
):
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with collector.tuned():
        assert gc.get_threshold() == (collector.YOUNG, collector.OLDER, collector.OLDEST)
        assert gc.get_freeze_count() > frozen
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
