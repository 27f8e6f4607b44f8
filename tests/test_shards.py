"""Shard keys are stable, and never shared by flows over other topics or shard counts."""

from flows.decode import Shards


def test_a_customer_always_lands_on_the_same_shard_of_its_flow() -> None:
    shards = Shards(32, "usage-events")
    keys = {shards.of(f"cust-{i:04d}") for i in range(200)}
    assert shards.of("cust-0007") == Shards(32, "usage-events").of("cust-0007")
    assert 1 < len(keys) <= 32


def test_other_topics_and_counts_get_other_streams() -> None:
    customer = "cust-0001"
    keys = {
        Shards(32, "usage-events").of(customer),
        Shards(32, "usage-events-eu").of(customer),
        Shards(16, "usage-events").of(customer),
    }
    assert len(keys) == 3
