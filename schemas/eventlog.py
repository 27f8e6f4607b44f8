"""Usage events at rest: Avro object container files, the input for replays.

The file embeds its writer schema, so a log written under an older contract is
still read into the latest contract shape (fields added since take their default).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from fastavro import reader, writer

from schemas.serde import parsed_schema


def write_event_log(
    path: str | Path,
    records: Iterable[Mapping[str, Any]],
    codec: Literal["null", "deflate"] = "deflate",
) -> int:
    """Stream records (contract shape) into a new file; returns how many were written."""
    written = 0

    def counted() -> Iterator[Mapping[str, Any]]:
        nonlocal written
        for record in records:
            written += 1
            yield record

    with open(path, "wb") as out:
        writer(out, parsed_schema(), counted(), codec=codec)
    return written


def read_event_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records in the latest contract shape, in file order, read lazily."""
    with open(path, "rb") as src:
        for record in reader(src, reader_schema=parsed_schema()):
            yield cast(dict[str, Any], record)
