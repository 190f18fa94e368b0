"""Runs a step on a batch: inline on the event loop, or in a thread, within its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pipeline.errors import StepError
from pipeline.events import Event
from steps.base import Emit, Fail, Outcome, Step

logger = logging.getLogger(__name__)
# A batch expected to take less than this (its size times the step's last time per event) runs on
# the event loop: a thread per batch cost the iris lr path's workers about a tenth of their CPU while
# draining (bench/floor.py --compare-tree, 4 rounds: 214 against 192 CPU µs per event; its batches
# take 5-20 ms), and a loop held this long is far inside the heartbeat and session timeouts.
INLINE_BELOW_S = 0.1


class Executor:
    """Runs ``step.process`` on a batch and never raises: a crash or an overrun of the step's
    ``deadline_ms`` fails every event of the batch instead.

    With ``threads`` (deployments), a batch that the step's last time per event says will take
    100 ms or more, the first batch, and every batch of a step with a deadline run in a thread, so
    heartbeats go on during long batches (a backlog's 500-event batch after light traffic's single
    events included); a batch past its deadline is failed at once while the step finishes it in
    the background. Without threads (the mock server) every batch runs inline and one that
    overran its deadline is failed when it returns: the same outcome, later.
    """

    def __init__(self, step: Step, *, threads: bool = True) -> None:
        self.step, self.threads = step, threads
        self._per_event_s = 0.0 if not threads else float("inf")  # the first batch's cost is unknown: a thread
        self._overrun: asyncio.Future | None = None

    async def run(self, events: list[Event]) -> list[Outcome]:
        """The step's outcomes for ``events``."""
        step = self.step
        try:
            if not self.threads and step.deadline_ms is None:  # the mock server's way: inline, untimed
                outcomes = step.process(events)
            else:
                outcomes = await self._timed(events)
            for outcome in outcomes:
                if not isinstance(outcome, (Emit, Fail)):
                    raise StepError(
                        f"step {step.name!r} returned {outcome!r:.80} from process(), not an Emit or a Fail"
                    )
            return outcomes
        except Exception as exc:  # a broken step must not stop the agent
            logger.exception("step %s failed a whole batch of %d events", step.name, len(events))
            return [step.fail(event, StepError(f"step crashed: {exc!r}")) for event in events]

    async def _timed(self, events: list[Event]) -> list[Outcome]:
        step = self.step
        if self._overrun is not None:  # a batch past its deadline still holds the step: wait for it
            with contextlib.suppress(Exception):
                await self._overrun
            self._overrun = None
        started = time.perf_counter()
        try:
            inline = self._per_event_s * len(events) < INLINE_BELOW_S
            if inline and (step.deadline_ms is None or not self.threads):
                outcomes = step.process(events)
                if step.deadline_ms is not None and time.perf_counter() - started > step.deadline_ms / 1000:
                    return self._late(events)
                return outcomes
            work = asyncio.ensure_future(asyncio.to_thread(step.process, events))
            if step.deadline_ms is None:
                return await work
            try:
                return await asyncio.wait_for(asyncio.shield(work), step.deadline_ms / 1000)
            except asyncio.TimeoutError:
                self._overrun = work
                return self._late(events)
        finally:
            if self.threads:
                self._per_event_s = (time.perf_counter() - started) / max(len(events), 1)

    def _late(self, events: list[Event]) -> list[Outcome]:
        late = StepError(
            f"step {self.step.name!r} took longer than its {self.step.deadline_ms:g} ms deadline "
            f"on a batch of {len(events)} events"
        )
        return [self.step.fail(event, late) for event in events]
