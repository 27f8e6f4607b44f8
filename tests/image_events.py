"""Usage of the example catalogue's image meter as a producer sends it (the contract's
fields by name), for stack tests that send a handful of events by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def image_event(event_id: str, at: datetime, images: int, customer: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "timestamp": at,
        "customer_id": customer,
        "project_id": None,
        "feature": None,
        "meter": "image.generation",
        "model": "sdxl",
        "provider": "stability",
        "mode": "realtime",
        "quantities": {"images": images},
        "properties": {},
        "region": None,
    }
