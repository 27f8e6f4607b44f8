"""Which quantity dimensions each meter accepts: part of the event contract.

Dimensions are disjoint, each priced on its own: `input_tokens` counts prompt
tokens not served from cache, `cached_input_tokens` those that were, and
`reasoning_tokens` are not included in `output_tokens`. `capacity` reports levels
(seats, storage, reserved GPUs held from the event time on), priced as recurring meters.
"""

from types import MappingProxyType

METER_DIMENSIONS: MappingProxyType[str, frozenset[str]] = MappingProxyType(
    {
        "llm.tokens": frozenset(
            {"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"}
        ),
        "gpu.time": frozenset({"gpu_ms"}),
        "image.generation": frozenset({"images"}),
        "agent.step": frozenset({"steps", "tool_calls"}),
        "api.call": frozenset({"calls"}),
        "capacity": frozenset({"seats", "storage_gb", "reserved_gpus"}),
    }
)

MODES = frozenset({"realtime", "batch"})
