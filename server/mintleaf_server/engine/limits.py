"""Engine limits and default policies (configuration with defaults; the server's config overrides).

Every limit produces a clear step failure naming the step and the limit, never a crash."""

from __future__ import annotations

from dataclasses import dataclass, field

from mintleaf_server.dsl.steps import RetryPolicy

__all__ = ["DEFAULT_EFFECT_RETRY", "Limits", "backoff_ms"]

# Steps that call the outside world (prompt, tool_call, embed, search) retry by default: 3 tries,
# 1 s, 2 s. Pure steps never retry: evaluating the same expression on the same scope fails again.
DEFAULT_EFFECT_RETRY = RetryPolicy(
    max_attempts=3, initial_interval_s=1.0, backoff_coefficient=2.0, max_interval_s=100.0
)


@dataclass(frozen=True)
class Limits:
    max_steps: int = 10_000  # completed steps per run (execution flow or branch)
    max_fanout: int = 10_000  # items of one foreach / map_reduce, branches of one parallel
    max_parallelism: int = 100  # window of concurrently running branches of one fan-out
    max_payload_bytes: int = 1_048_576  # JSON size of one step output / transition
    max_frames: int = 64  # nesting of bodies + sub-workflow calls in one run
    max_yield_depth: int = 32  # nested yield calls (cycles are allowed up to this depth)
    steps_per_advance: int = 16  # pure steps run before handing control back to the worker
    effect_timeout_s: float = 600.0  # default step timeout of steps that call the outside world
    max_wait_s: float = 31 * 86_400.0  # a wait for input fails after this long
    execution_timeout_s: float | None = None  # whole execution (the task's `timeout` is per step)
    effect_retry: RetryPolicy = field(default=DEFAULT_EFFECT_RETRY)


def backoff_ms(policy: RetryPolicy, failed_attempt: int) -> int:
    """Delay before the attempt after `failed_attempt` (1-based): exponential, capped.

    No jitter: the machine has no randomness; the worker may spread timers itself."""
    delay = policy.initial_interval_s * policy.backoff_coefficient ** max(0, failed_attempt - 1)
    return int(min(delay, policy.max_interval_s) * 1000)
