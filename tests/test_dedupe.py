from hypothesis import given
from hypothesis import strategies as st

from flows.dedupe import BUCKET_US, DedupeWindow, Verdict

HOUR = BUCKET_US


def test_resend_inside_horizon_is_a_duplicate() -> None:
    window = DedupeWindow(horizon_us=24 * HOUR)
    assert window.check("c1", "e1", 10 * HOUR) is Verdict.FRESH
    assert window.check("c1", "e1", 10 * HOUR) is Verdict.DUPLICATE
    assert window.check("c2", "e1", 10 * HOUR) is Verdict.FRESH


def test_ids_past_the_horizon_are_forgotten_and_old_events_refused() -> None:
    window = DedupeWindow(horizon_us=2 * HOUR)
    window.check("c1", "old", 0)
    window.check("c1", "new", 5 * HOUR)
    assert window.first_seen("c1", "old") is None
    assert len(window) == 1
    assert window.check("c1", "old", 0) is Verdict.BEYOND_HORIZON


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 60)), max_size=300))
def test_a_resent_event_is_never_fresh_twice(sends: list[tuple[str, int]]) -> None:
    """Re-sends repeat the record, so an id always carries the same event time (here: its hour)."""
    window = DedupeWindow(horizon_us=6 * HOUR)
    counted: set[tuple[str, int]] = set()
    max_us = 0
    for customer, event in sends:
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
    assert len(window) <= len(counted)
