"""`meterflow export` and `meterflow import`: usage events as Avro event-log files.

An exported log is the input of a replay elsewhere, or of an import into another
topic. Records that did not even decode (corrupt bytes, unknown schema) have no
contract shape and are counted, not written; everything that decoded is kept as
sent, invalid or not, since a replay validates again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows.producing import open_producer
from flows.settings import Settings
from reports.event_logs import Source
from schemas.eventlog import read_event_log, write_event_log


def export_log(source: Source, path: Path) -> tuple[int, int]:
    """Write the decodable records of `source` to `path`; returns (written, undecodable)."""
    undecodable = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal undecodable
        for entry in source:
            if isinstance(entry.record, dict):
                yield entry.record
            else:
                undecodable += 1

    return write_event_log(path, records()), undecodable


def import_log(settings: Settings, path: Path) -> int:
    """Send every record of the log to the usage topic; returns how many were delivered."""
    with open_producer(settings) as producer:
        for record in read_event_log(path):
            producer.send(record)
    if producer.report.failed:
        raise RuntimeError(f"{len(producer.report.failed)} records not delivered")
    return producer.report.delivered
