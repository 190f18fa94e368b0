"""Settings every agent of a worker process shares: batching, commits, Kafka clients, identity."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


def default_instance() -> str:
    """This worker's identity among the replicas of a step: ``$STREAMSERVE_INSTANCE`` (set it from
    a pod name or a compose index), else ``<hostname>.<pid>``, unique on every machine."""
    return os.environ.get("STREAMSERVE_INSTANCE") or f"{socket.gethostname()}.{os.getpid()}"


@dataclass(frozen=True)
class AgentSettings:
    """Batching, commit, client and group settings shared by every agent of a process."""

    max_batch_size: int = 500
    max_batch_time_ms: int = 100  # poll wait when nothing is buffered; a batch is what arrived by then
    commit_interval_ms: int | None = 100  # at-least-once: outputs awaited, offsets committed this often
    # The producer's record batch size; a larger record is sent alone. Measured (bench/tuning.py, iris lr
    # path, 2 cores): Kafka's 16,384 drains 0.70 (0.53-1.23)x the events/s of 65,536, its workers spending
    # 199 CPU µs per event against 126. Latency cannot change at moderate rates: 1,000/s of 300-byte
    # envelopes fill 1.5 KB in linger_ms, far below either size. A topic whose max.message.bytes is
    # below this refuses full batches; they are then sent record by record, with a warning.
    batch_bytes: int = 65_536
    linger_ms: int = 5
    max_request_size: int = 1_048_576
    compression_type: str | None = None
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_500
    # Under traffic the broker answers a fetch once it holds fetch_min_bytes, or after fetch_max_wait_ms
    # (fewer, larger requests); idle, it answers the first record and is asked every idle_fetch_wait_ms.
    # Measured (bench/tuning.py, iris lr path at 1,000/s): the broker's CPU per event 530 -> 390 µs,
    # the workers' 1,063 -> 678, p99 104 -> 67 ms, against answering every record at once with linger 1 ms.
    fetch_max_wait_ms: int = 10
    fetch_min_bytes: int = 2048
    idle_fetch_wait_ms: int = 500
    # Python's cyclic garbage collector: once the steps are loaded, what start-up made (modules, models)
    # is frozen out of every later collection (else each full collection walks them all again), and the
    # youngest generation is collected after this many allocations instead of 700. None leaves it as is.
    gc_gen0_threshold: int | None = 20_000
    instance: str = field(default_factory=default_instance)
