"""What the flow hands the sink: a columnar batch per table, each row led by its stream
and position.

A stream is one ordered source of rows (a Kafka partition, a shard of
customers) and a position is that row's place in it, assigned deterministically,
so a replay after recovery produces the very same (stream, position) pairs and
the sink can tell which of them it has already written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sinks.tables import SCHEMAS


@dataclass(slots=True)
class SinkBatch:
    """One stream's rows, per table an Arrow record batch in position order."""

    stream: str
    tables: dict[str, pa.RecordBatch] = field(default_factory=dict)

    def add(self, table: str, columns: Mapping[str, Sequence[Any]]) -> None:
        """A table's columns by name; its schema (`sinks.tables`) converts and checks them.
        No columns with no rows: a table is added once per batch or not at all."""
        assert table not in self.tables, f"{table} added twice to one batch"
        batch = pa.RecordBatch.from_pydict(dict(columns), schema=SCHEMAS[table])
        if batch.num_rows:
            self.tables[table] = batch

    def __len__(self) -> int:
        return sum(batch.num_rows for batch in self.tables.values())
