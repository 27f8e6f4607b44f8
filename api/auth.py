"""API keys and per-key rate limits.

Keys come from `METERFLOW_API_KEYS` or the file `METERFLOW_API_KEYS_FILE`, never from
the repository: `KEY=SCOPE` entries, where SCOPE is `operator` (everything) or a
customer id (that customer's own data, and ingest for it only). A presented key is
compared with every configured key in constant time (`hmac.compare_digest`), so
neither a match nor its position leaks through timing. Each key has a token bucket.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

OPERATOR = "operator"
MIN_KEY_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ApiKey:
    secret: str = field(repr=False)
    scope: str

    @property
    def operator(self) -> bool:
        return self.scope == OPERATOR

    def may_read(self, customer_id: str) -> bool:
        return self.operator or self.scope == customer_id


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """`KEY=SCOPE` entries separated by commas or new lines; `#` starts a comment line."""
    keys = []
    for entry in text.replace(",", "\n").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        secret, sep, scope = entry.rpartition("=")
        if not sep or not scope.strip():
            raise ValueError(f"{source}: an API key entry must be KEY=SCOPE, got {entry[:4]}…")
        if len(secret.strip()) < MIN_KEY_LENGTH:
            raise ValueError(f"{source}: API keys must have at least {MIN_KEY_LENGTH} characters")
        keys.append(ApiKey(secret.strip(), scope.strip()))
    return keys


def load_keys(inline: str, path: Path | None) -> list[ApiKey]:
    keys = parse_keys(inline, "METERFLOW_API_KEYS")
    if path is not None:
        if not path.is_file():
            raise ValueError(f"METERFLOW_API_KEYS_FILE {path} is not a readable file")
        keys += parse_keys(path.read_text(), str(path))
    if not keys:
        raise ValueError("no API keys: set METERFLOW_API_KEYS or METERFLOW_API_KEYS_FILE")
    return keys


class KeyRing:
    def __init__(self, keys: list[ApiKey]):
        self._keys = [(key, key.secret.encode()) for key in keys]

    def match(self, presented: str) -> ApiKey | None:
        """The key `presented` names; every key is compared, whichever matches."""
        given = presented.encode()
        found = None
        for key, secret in self._keys:
            if hmac.compare_digest(given, secret):
                found = key
        return found


class RateLimiter:
    """A token bucket per key: `rate` requests a second, bursts up to twice that."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = 2 * rate
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_for(self, key: ApiKey) -> float:
        """Take one token; 0 if there was one, else the seconds until there will be."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key.secret, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[key.secret] = (tokens - 1, now)
                return 0.0
            self._buckets[key.secret] = (tokens, now)
            return (1 - tokens) / self.rate
