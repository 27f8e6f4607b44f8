"""The benchmark runs and prints its figures in the `name value` form."""

from __future__ import annotations

import pytest

from bench.rating import bench_rating


def test_bench_prints_events_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    bench_rating(2_000)
    lines = capsys.readouterr().out.split("\n")
    names = [line.split()[0] for line in lines if line]
    assert names == ["rating.batch_events_per_second", "rating.mixed_batch_events_per_second"]
    assert all(int(line.split()[1]) > 0 for line in lines if line)
