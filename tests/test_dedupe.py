import pickle
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.dedupe import BUCKET_US, DedupeWindow, Verdict

HOUR = BUCKET_US


def test_resend_inside_horizon_is_a_duplicate() -> None:
    window = DedupeWindow(horizon_us=24 * HOUR)
    assert window.check("c1", "e1", 10 * HOUR) is Verdict.FRESH
    assert window.check("c1", "e1", 10 * HOUR) is Verdict.DUPLICATE
    assert window.check("c2", "e1", 10 * HOUR) is Verdict.FRESH


def test_ids_past_the_horizon_are_forgotten_and_old_events_refused(tmp_path: Path) -> None:
    window = DedupeWindow(horizon_us=2 * HOUR, folder=tmp_path, seal_ids=1)
    window.check("c1", "old", 0)
    window.seal()
    window.check("c1", "new", 5 * HOUR)
    window.seal()  # the two runs merge, and the merge drops what is past the horizon
    assert window.first_seen("c1", "old") is None
    assert len(window) == 1
    assert window.check("c1", "old", 0) is Verdict.BEYOND_HORIZON


def test_a_sealed_duplicate_reports_its_first_content_and_hour(tmp_path: Path) -> None:
    window = DedupeWindow(horizon_us=24 * HOUR, folder=tmp_path, seal_ids=1)
    window.check("c1", "e1", 10 * HOUR + 5, content=42)
    window.seal()
    (seen,) = window.check_batch([("c1", "e1", 10 * HOUR + 5, 43)])
    assert (seen.verdict, seen.first_us, seen.first_fingerprint) == (
        Verdict.DUPLICATE,
        10 * HOUR,
        42,
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"), st.integers(0, 60), st.sampled_from(["", "seal", "snap"])
        ),
        max_size=300,
    ),
    st.integers(1, 8),
)
def test_a_resent_event_is_never_fresh_twice(
    tmp_path: Path, sends: list[tuple[str, int, str]], seal_ids: int
) -> None:
    """Re-sends repeat the record, so an id always carries the same event time (here: its
    hour); seals (of however many ids) and snapshot round trips anywhere change nothing."""
    window = DedupeWindow(horizon_us=6 * HOUR, folder=tmp_path, seal_ids=seal_ids)
    counted: set[tuple[str, int]] = set()
    max_us = 0
    for customer, event, then in sends:
        event_us = event * HOUR
        verdict = window.check(customer, str(event), event_us)
        if event_us < max_us - 6 * HOUR:
            assert verdict is Verdict.BEYOND_HORIZON
        elif (customer, event) in counted:
            assert verdict is Verdict.DUPLICATE
        else:
            assert verdict is Verdict.FRESH
            counted.add((customer, event))
        max_us = max(max_us, event_us)
        if then:
            window.seal()
        if then == "snap":
            window = pickle.loads(pickle.dumps(window))
    assert len(window) <= len(counted)


def test_a_million_held_ids_survive_a_snapshot_and_are_all_duplicates(tmp_path: Path) -> None:
    window = DedupeWindow(horizon_us=24 * HOUR, folder=tmp_path)
    ids = [(f"cust-{i % 1000:04d}", f"evt-{i}", HOUR + i, i) for i in range(1_000_000)]
    for start in range(0, len(ids), 20_000):
        window.check_batch(ids[start : start + 20_000])
        window.seal()
    snapshot = pickle.dumps(window)
    assert len(snapshot) < 100_000  # names of run files, not the ids
    resumed = pickle.loads(snapshot)
    assert len(resumed) == 1_000_000
    seen = resumed.check_batch(ids)
    assert {s.verdict for s in seen} == {Verdict.DUPLICATE}
    assert [s.first_fingerprint for s in seen[:3]] == [0, 1, 2]
