"""Run a graph's agents: several in one process, or one process per worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator, Sequence

from pipeline.errors import DeploymentError, TransportError
from pipeline.kafka_access import probe, wait_for_coordinator
from pipeline.kafka_config import KafkaConfigLike, resolve
from pipeline.observe import observing
from pipeline.plan import Agent, Plan
from pipeline.runtime.kafka import KafkaTransport
from pipeline.runtime.loop import AgentLoop
from pipeline.runtime.sensors import Sensors
from pipeline.runtime.settings import AgentSettings

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0
STOP_GRACE_S = 10.0


def select_agents(plan: Plan, names: Sequence[str] | None) -> list[str]:
    """The agent names to run: ``names`` checked against the plan, or every agent."""
    known = [agent.name for agent in plan.agents]
    for name in names or ():
        if name not in known:
            raise DeploymentError(f"graph {plan.graph.name!r} has no step {name!r}; steps: {', '.join(known)}")
    return list(names) if names else known


async def run_agents(
    plan: Plan,
    bootstrap: str,
    names: Sequence[str] | None = None,
    settings: AgentSettings | None = None,
    stopping: asyncio.Event | None = None,
    sensors: Sensors | None = None,
    *,
    kafka_config: KafkaConfigLike = None,
    metrics_port: int | None = None,
) -> None:
    """Run the named agents (default: all) in this process until SIGTERM, SIGINT, SIGHUP or ``stopping``.

    One agent's failure never stops the others: it is started again after a backoff. Clients
    connect as ``kafka_config`` says (see :func:`pipeline.kafka_config.resolve`); credentials
    or TLS the cluster refuses raise DeploymentError before any step loads. With
    ``metrics_port``, /metrics, /healthz and /readyz are served there (see :mod:`pipeline.observe`).
    Once the steps are loaded, the process's garbage collector is settled as
    ``settings.gc_gen0_threshold`` says until the agents stop (see :func:`settled_collector`).
    """
    stopping = stopping or asyncio.Event()
    settings = settings or AgentSettings()
    config = resolve(kafka_config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            loop.add_signal_handler(signum, stopping.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    agents = [plan.agent(name) for name in select_agents(plan, names)]
    names = [agent.name for agent in agents]
    async with observing(plan, names, bootstrap, config, metrics_port=metrics_port, sensors=sensors) as observed:
        if config.security_protocol != "PLAINTEXT":
            logger.info("Kafka clients connect with %s", config.describe())
        try:
            await probe(bootstrap, config)  # refused credentials or TLS: DeploymentError, before any model loads
            await wait_for_coordinator(bootstrap, config, [f"{plan.graph.name}.{name}" for name in names])
        except TransportError as exc:
            logger.info("%s; the agents will keep trying", exc)
        for agent in agents:
            agent.step.setup()
        with settled_collector(settings.gc_gen0_threshold):
            await asyncio.gather(
                *(_keep_running(plan, agent, bootstrap, settings, observed, stopping, config) for agent in agents)
            )


@contextlib.contextmanager
def settled_collector(gen0_threshold: int | None) -> Iterator[None]:
    """Keep Python's cyclic garbage collector off the agents' hot path while they run: what exists
    now (modules, loaded models: long-lived) is frozen out of every collection, and the youngest
    generation is collected every ``gen0_threshold`` allocations; on the way out, the collector is
    as it was (a cycle among the frozen objects dropped meanwhile is collected then). None: no change."""
    if gen0_threshold is None:
        yield
        return
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, *before[1:])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def agent_loop(
    plan: Plan,
    agent: Agent,
    bootstrap: str,
    settings: AgentSettings,
    sensors: Sensors | None,
    kafka_config: KafkaConfigLike = None,
) -> AgentLoop:
    """The loop that runs ``agent`` against the Kafka cluster at ``bootstrap``, connecting as
    ``kafka_config`` says."""
    group = f"{plan.graph.name}.{agent.name}"
    transport = KafkaTransport(
        bootstrap,
        settings,
        exactly_once=plan.graph.guarantee == "exactly_once",
        client_id=f"{group}.{settings.instance}",
        kafka_config=kafka_config,
    )
    return AgentLoop(plan, agent, transport, settings=settings, sensors=sensors)


async def _keep_running(
    plan: Plan,
    agent: Agent,
    bootstrap: str,
    settings: AgentSettings,
    sensors: Sensors | None,
    stopping: asyncio.Event,
    kafka_config: KafkaConfigLike = None,
) -> None:
    """Run ``agent``, starting it again with backoff after a failure (a broker that cannot be
    reached, or a fault of ours); its step forgets what it learned from records not committed."""
    backoff = 1.0
    while not stopping.is_set():
        try:
            await _run_until_stopped(agent_loop(plan, agent, bootstrap, settings, sensors, kafka_config), stopping)
            return
        except DeploymentError:
            raise
        except TransportError as exc:
            logger.warning(
                "agent %s: broker %s unreachable (%s); retrying in %.0f s", agent.name, bootstrap, exc, backoff
            )
        except Exception:
            logger.exception("agent %s failed; starting it again in %.0f s", agent.name, backoff)
        agent.step.release(lambda where: False)
        try:
            await asyncio.wait_for(stopping.wait(), backoff)
        except asyncio.TimeoutError:
            pass
        backoff = min(backoff * 2, MAX_BACKOFF_S)


async def _run_until_stopped(loop: AgentLoop, stopping: asyncio.Event) -> None:
    """``loop.run``; once stopping, it gets ``STOP_GRACE_S`` to finish its batch before it is
    cancelled (a batch can hang on a broker that vanished; cancelled, it is not committed)."""
    task = asyncio.ensure_future(loop.run(stopping))
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait([task], timeout=STOP_GRACE_S)
            if not done:
                logger.warning(
                    "agent %s: batch still running %.0f s after the stop; cancelling it", loop.agent.name, STOP_GRACE_S
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return
        await task
    finally:
        stopped.cancel()
