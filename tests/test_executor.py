"""Where a deployed step's batch runs: on the event loop while it is expected to be short, else in a
thread (heartbeats go on), judged by the batch's size times the step's last time per event."""

from __future__ import annotations

import asyncio
import threading
import time

from pipeline.events import Event
from pipeline.runtime.executor import INLINE_BELOW_S, Executor
from steps.base import Emit, Outcome, Step

PER_EVENT_S = 0.002


class Slow(Step):
    """Takes PER_EVENT_S per event and records the thread each batch ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.name, self.threads = "slow", []

    def process(self, events: list[Event]) -> list[Outcome]:
        self.threads.append(threading.current_thread() is threading.main_thread())
        time.sleep(PER_EVENT_S * len(events))
        return [Emit(event) for event in events]


def test_a_batch_runs_inline_only_while_its_size_times_the_last_cost_per_event_is_short() -> None:
    step = Slow()
    executor = Executor(step, threads=True)
    backlog = int(2 * INLINE_BELOW_S / PER_EVENT_S)  # twice what fits on the loop

    async def run() -> None:
        for size in (1, 1, 3, backlog, 1):
            outcomes = await executor.run([Event({"n": n}) for n in range(size)])
            assert len(outcomes) == size

    asyncio.run(run())
    # the first batch's cost is unknown: a thread; small ones then run inline; the backlog's
    # batch is expected to take 2 x INLINE_BELOW_S: a thread; then inline again
    assert step.threads == [False, True, True, False, True]


def test_the_mock_server_runs_every_batch_inline() -> None:
    step = Slow()
    asyncio.run(Executor(step, threads=False).run([Event({"n": n}) for n in range(60)]))
    assert step.threads == [True]
