"""Run a graph's agents: several in one process, or one process per worker."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence

from aiokafka.errors import KafkaConnectionError

from pipeline.agent import AgentSettings, StreamAgent
from pipeline.errors import DeploymentError
from pipeline.plan import Plan

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0


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
) -> None:
    """Run the named agents (default: all) in this process until SIGTERM/SIGINT or ``stopping``."""
    stopping = stopping or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stopping.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    agents = [StreamAgent(plan, plan.agent(name), bootstrap, settings) for name in select_agents(plan, names)]
    await asyncio.gather(*(_keep_running(agent, stopping) for agent in agents))


async def _keep_running(agent: StreamAgent, stopping: asyncio.Event) -> None:
    """Run ``agent``, restarting it with backoff while the broker cannot be reached."""
    backoff = 1.0
    while not stopping.is_set():
        try:
            await agent.run(stopping)
            return
        except KafkaConnectionError as exc:
            logger.warning(
                "agent %s: broker %s unreachable (%s); retrying in %.0f s",
                agent.agent.name,
                agent.bootstrap,
                exc,
                backoff,
            )
            try:
                await asyncio.wait_for(stopping.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def run_workers(reference: str, bootstrap: str, names: Sequence[str] | None, workers: int) -> int:
    """Start ``workers`` processes running the named agents; forward signals; wait for all."""
    commands = []
    for instance in range(workers):
        command = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            reference,
            "--bootstrap",
            bootstrap,
            "--instance",
            str(instance),
        ]
        for name in names or ():
            command += ["--step", name]
        commands.append(command)
    children = [subprocess.Popen(command) for command in commands]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)
