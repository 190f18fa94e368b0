"""Operator fusion, chosen at deploy time: a cheap stateless step runs inside the agents that feed
it (``pre`` with its router, ``post`` with each model) instead of as an agent of its own, so
its events skip a Kafka hop. The graph stays the same; the plan has fewer agents and topics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from pipeline.codec import as_delivered
from pipeline.errors import StepError
from pipeline.events import ErrorRecord, Event
from pipeline.plan import Agent, Plan
from steps.base import Emit, Fail, Keep, Outcome, Step

logger = logging.getLogger(__name__)


class Chain(Step):
    """``first``, then ``then`` on every event ``first`` sends on to its successors; events
    tagged for a join, failures and answers bypass ``then``, as they would over Kafka.

    Between the two, each body goes through the inter-step codec as a Kafka hop would take it
    (numpy scalars become numbers, tuples lists, arrays private copies), and a crash of ``then``
    fails only the events it was given: fused and unfused deployments answer alike."""

    def __init__(self, first: Step, then: Step) -> None:
        self.first, self.then = first, then
        self.name = first.name
        self.deadline_ms = first.deadline_ms  # a step with a deadline of its own is never fused
        self.keyed_by_id = first.keyed_by_id

    def setup(self) -> None:
        self.first.setup()
        self.then.setup()

    def process(self, events: list[Event]) -> list[Outcome]:
        return self._onward(self.first.process(events))

    def expire(self, now: float) -> list[Outcome]:
        return self._onward(self.first.expire(now))

    def held(self) -> Iterable[Event]:
        return self.first.held()

    def release(self, keep: Keep) -> None:
        self.first.release(keep)

    def routes(self) -> Mapping[str, str]:
        return self.then.routes()

    def parts(self) -> Sequence[Step]:
        return self.then.parts()

    def fail(self, event: Event, exc: BaseException) -> Outcome:
        return self.first.fail(event, exc)

    def _onward(self, outcomes: list[Outcome]) -> list[Outcome]:
        passing: list[Event] = []
        kept: list[Outcome] = []
        for outcome in outcomes:
            event = outcome.event
            if not (isinstance(outcome, Emit) and outcome.route is None and "join" not in event.meta):
                kept.append(outcome)
                continue
            try:
                event.body = as_delivered(event.body)
            except Exception as exc:  # what the unfused agent could not have sent either
                error = StepError(f"step {self.first.name!r} produced an output that cannot be sent: {exc!s:.300}")
                kept.append(Fail(event, ErrorRecord.from_exception(event.id, self.first.name, error)))
                continue
            passing.append(event)
        if not passing:
            return kept
        try:
            return kept + self.then.process(passing)
        except Exception as exc:  # as the unfused agent of ``then`` would: its own events fail
            logger.exception("step %s failed a whole batch of %d events", self.then.name, len(passing))
            return kept + [self.then.fail(event, StepError(f"step crashed: {exc!r}")) for event in passing]


def fusable(step: Step) -> bool:
    """Whether ``step`` can run inside the agents that feed it: it keeps no state across events
    and has no deadline of its own (which would have to cover its feeder's time too)."""
    kind = type(step)
    return (
        not step.keyed_by_id
        and step.deadline_ms is None
        and kind.held is Step.held
        and kind.expire is Step.expire
        and kind.release is Step.release
        and not step.replies()
    )


def fused(plan: Plan, wanted: Callable[[Agent], bool] = lambda agent: True) -> Plan:
    """``plan`` with every fusable agent that ``wanted`` picks run inside its feeders: the
    agents whose outputs all go to its topic (through their unnamed route, and only there)."""
    agents = list(plan.agents)
    changed = True
    while changed:
        changed = False
        for target in agents:
            if target.input == plan.source or not fusable(target.step) or not wanted(target):
                continue
            feeders = [a for a in agents if target.input in _targets(a)]
            if not feeders or any(a.routes.get(None) != (target.input,) or _named_to(a, target.input) for a in feeders):
                continue
            agents = [_merge(a, target) if a in feeders else a for a in agents if a is not target]
            changed = True
            break
    return replace(plan, agents=tuple(agents))


def _targets(agent: Agent) -> set[str]:
    return {topic for topics in agent.routes.values() for topic in topics} | set(agent.replies.values())


def _named_to(agent: Agent, topic: str) -> bool:
    return any(topic in topics for route, topics in agent.routes.items() if route is not None)


def _merge(feeder: Agent, target: Agent) -> Agent:
    routes = {**feeder.routes, **target.routes}
    return Agent(feeder.name, target.node, Chain(feeder.step, target.step), feeder.input, routes, feeder.replies)
