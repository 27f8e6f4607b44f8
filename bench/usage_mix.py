"""Who uses what in generated traffic: the customers, the models with their share of
traffic, and the shape of each meter's quantities (heavy-tailed, as real usage is)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from types import MappingProxyType

from bench.catalogue import customer_id as generated_id

MAX_CUSTOMERS = 24
"""The example contract catalogue lists exactly `cust-0001`..`cust-0024`; more customers
come from a generated catalogue (`bench.catalogue`)."""
MAX_GENERATED = 1_000_000


@cache
def customer_ids(n: int = MAX_CUSTOMERS) -> tuple[str, ...]:
    """The example catalogue's customers, or beyond 24 the generated catalogue's
    (`bench.catalogue.write_customers`, for `meterflow catalogue apply`)."""
    if n > MAX_CUSTOMERS:
        return tuple(generated_id(i) for i in range(1, n + 1))
    return tuple(f"cust-{i:04d}" for i in range(1, n + 1))


def rank_weights(ranks: Iterable[int]) -> list[float]:
    """Cumulative weights of customers by rank, rank^-1.2: a few send most of the traffic."""
    return list(accumulate(rank**-1.2 for rank in ranks))


@cache
def known_customers(n: int) -> frozenset[str]:
    return frozenset(customer_ids(n))


@dataclass(frozen=True, slots=True)
class ModelProfile:
    model: str
    meter: str
    providers: tuple[str, ...]
    weight: float
    """Relative share of valid traffic."""


CATALOGUE: tuple[ModelProfile, ...] = (
    ModelProfile("gpt-4o-mini", "llm.tokens", ("openai", "azure-openai"), 24),
    ModelProfile("gpt-4o", "llm.tokens", ("openai", "azure-openai"), 14),
    ModelProfile("claude-sonnet-4", "llm.tokens", ("anthropic", "aws-bedrock"), 14),
    ModelProfile("llama-3.1-70b", "llm.tokens", ("self-hosted", "meta"), 8),
    ModelProfile("h100", "gpu.time", ("nvidia", "coreweave"), 3),
    ModelProfile("a100", "gpu.time", ("nvidia", "self-hosted"), 3),
    ModelProfile("sdxl", "image.generation", ("stability", "self-hosted"), 4),
    ModelProfile("dall-e-3", "image.generation", ("openai",), 3),
    ModelProfile("agent-runtime", "agent.step", ("meterflow",), 10),
    ModelProfile("search-api", "api.call", ("meterflow",), 17),
)

FEATURES = ("chat-assistant", "doc-summary", "ticket-triage", "code-review", "search")
SDKS = ("python/1.4.2", "python/1.5.0", "node/2.1.0", "go/0.9.3")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")

Shape = Callable[[random.Random, str], tuple[dict[str, int], dict[str, str]]]


@dataclass(frozen=True, slots=True)
class _Task:
    name: str
    weight: float
    input_median: int
    output_median: int
    cached_chance: float
    """How often the prompt prefix hits the provider's cache."""
    reasoning_chance: float
    """How often a reasoning model thinks before answering."""


_TASKS = (
    _Task("chat", 5, 900, 450, 0.5, 0.3),
    _Task("summarisation", 3, 600, 1400, 0.2, 0.2),
    _Task("classification", 2, 2400, 6, 0.7, 0.0),
)
_TASK_WEIGHTS = list(accumulate(task.weight for task in _TASKS))
_REASONING_MODELS = frozenset({"claude-sonnet-4"})


def _llm_tokens(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    task = rng.choices(_TASKS, cum_weights=_TASK_WEIGHTS)[0]
    prompt = _log_normal(rng, task.input_median, 0.9, 1, 200_000)
    completion = _log_normal(rng, task.output_median, 0.8, 1, 16_000)
    quantities = {"input_tokens": prompt, "output_tokens": completion}
    if rng.random() < task.cached_chance and (cached := int(prompt * rng.uniform(0.2, 0.95))):
        quantities["input_tokens"] = prompt - cached
        quantities["cached_input_tokens"] = cached
    if model in _REASONING_MODELS and rng.random() < task.reasoning_chance:
        quantities["reasoning_tokens"] = _log_normal(rng, 700, 1.0, 1, 32_000)
    return quantities, {"task": task.name}


def _gpu_time(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    gpu_ms = _log_normal(rng, 90_000, 1.8, 1_000, 8 * 3_600_000)
    return {"gpu_ms": gpu_ms}, {"job": rng.choice(("inference", "fine-tune", "embedding", "eval"))}


def _images(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    images = rng.choices((1, 2, 4), weights=(75, 15, 10))[0]
    return {"images": images}, {"size": rng.choice(("1024x1024", "1792x1024", "1024x1792"))}


def _agent_steps(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    steps = _log_normal(rng, 12, 0.8, 1, 400)
    quantities = {"steps": steps}
    if tool_calls := round(steps * rng.uniform(0.2, 0.8)):
        quantities["tool_calls"] = tool_calls
    return quantities, {}


def _api_calls(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    calls = 1 if rng.random() < 0.85 else _log_normal(rng, 10, 1.0, 2, 500)
    return {"calls": calls}, {}


SHAPES: Mapping[str, Shape] = MappingProxyType(
    {
        "llm.tokens": _llm_tokens,
        "gpu.time": _gpu_time,
        "image.generation": _images,
        "agent.step": _agent_steps,
        "api.call": _api_calls,
    }
)


def _log_normal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """Heavy-tailed integer counts, as token and job sizes are, clamped to a plausible range."""
    return min(max(round(median * math.exp(rng.gauss(0.0, sigma))), low), high)
