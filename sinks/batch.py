"""What the flow hands the sink: rows per table, each row led by its stream and position.

A stream is one ordered source of rows (a Kafka partition, a shard of
customers) and a position is that row's place in it, assigned deterministically,
so a replay after recovery produces the very same (stream, position) pairs and
the sink can tell which of them it has already written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Row = tuple[Any, ...]


@dataclass(slots=True)
class SinkBatch:
    """Rows of one stream: every row's first column is `stream`."""

    stream: str
    tables: dict[str, list[Row]] = field(default_factory=dict)

    def add(self, table: str, row: Row) -> None:
        self.tables.setdefault(table, []).append(row)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.tables.values())
