"""SIGKILLs under live traffic, on the conditions production has (see `bench.faults`):
nothing lost, nothing doubled, no view short, every line as an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import FaultSpec, run_faults
from flows.settings import Settings

pytestmark = pytest.mark.stack


def test_ten_sigkills_under_live_traffic_on_six_murmur2_partitions_change_nothing(
    settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    spec = FaultSpec(events=12_000, customers=1_000, partitions=6, kills=10, rate=500)
    report = run_faults(settings, spec, tmp_path)
    assert report.kills >= 10
    assert report.expected == spec.events
    figures = report.figures()
    faults = ("lost", "doubled", "raw_doubled", "views_short", "lines_differing")
    assert {k: figures[k] for k in faults} == {
        "lost": 0,
        "doubled": 0,
        "raw_doubled": 0,
        "views_short": 0,
        "lines_differing": 0,
    }
    assert report.reconciled and report.clean


@pytest.mark.parametrize("partitions", [1, 3])
def test_sigkills_on_one_and_three_partitions_change_nothing(
    settings: Settings, kafka_bootstrap: str, tmp_path: Path, partitions: int
) -> None:
    spec = FaultSpec(events=4_000, customers=1_000, partitions=partitions, kills=5, rate=500)
    report = run_faults(settings, spec, tmp_path)
    assert report.kills >= 5 and report.expected == spec.events
    assert report.clean, report.figures()
