"""One streamserve worker with AgentSettings overrides, from this or another checkout.

What ``streamserve run GRAPH --step NAME`` does (load the graph, run the agent until SIGTERM), with
any AgentSettings field set from the command line, which the CLI does not offer; ``--tree`` runs the
streamserve of another checkout (its ``pipeline`` and ``steps`` are imported first).

Run: python bench/worker.py FILE.py:graph --step NAME --bootstrap HOST:PORT [--instance N]
                           [--tree PATH] [--set linger_ms=5,fetch_max_wait_ms=10]
(``common.Deployment`` starts it when given ``settings`` or ``tree``.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("graph", help="FILE.py:NAME")
    cli.add_argument("--step", action="append", required=True, help="agent to run (repeatable)")
    cli.add_argument("--bootstrap", required=True)
    cli.add_argument("--instance", default="0")
    cli.add_argument("--tree", type=Path, default=BENCH.parent, help="the streamserve checkout to run")
    cli.add_argument("--set", default="", help="AgentSettings overrides, name=value[,name=value...]")
    cli.add_argument("--fuse", action="store_true", help="run the fused plan (as `streamserve run --fuse`)")
    args = cli.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))

    import overrides  # bench/, this script's folder (sys.path[1] now)

    from pipeline.loading import load_graph
    from pipeline.logs import configure
    from pipeline.plan import build_plan
    from pipeline.runner import run_agents

    configure()
    settings_class = overrides.agent_settings_class()
    typed = overrides.coerce(settings_class, overrides.split(args.set))
    instance_default = settings_class().instance
    instance = args.instance if isinstance(instance_default, str) else int(args.instance)
    settings = settings_class(**{**typed, "instance": instance})
    plan = build_plan(load_graph(args.graph), **({"fuse": True} if args.fuse else {}))
    asyncio.run(run_agents(plan, args.bootstrap, args.step, settings))


if __name__ == "__main__":
    main()
