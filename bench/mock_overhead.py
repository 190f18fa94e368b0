"""Mock-server framework overhead per step: a graph call against the same work called directly.

Each measurement runs in a fresh process (``--child``) that imports streamserve from one checkout:
this one, and with --compare-tree PATH another (e.g. the commit before a runtime change), in an
order that alternates per round, --rounds times. A process times every graph with
``timing.best_of`` (the fastest of 5 batches of --repeat calls); the figures are the median
(min-max) of the rounds. Graphs:

- 10 no-op task steps; a router and a no-op model: the framework alone;
- iris pre -> router -> lr -> post: the iris lr path as the mock server runs it, scikit-learn's
  LogisticRegression included in both the graph call and the direct call (the goal's path);
- the same with a no-op estimator: the iris path without scikit-learn, to show how much of the lr
  row's overhead is scikit-learn being called by the framework rather than the framework's own code.

Run: python bench/mock_overhead.py [--repeat 20000] [--rounds 3] [--compare-tree PATH] [--quick]
Prints a table and writes bench/results/mock_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROW = [[5.1, 3.5, 1.4, 0.2]]
GOAL_GRAPH = "iris pre -> router -> lr -> post"


def measure(repeat: int) -> list[dict[str, Any]]:
    """Every graph's µs per call, through the mock server and directly (imports the chosen checkout)."""
    import numpy as np
    from timing import best_of

    from examples.iris.iris import Preprocess, build, postprocess
    from pipeline import Graph
    from steps import ModelServer

    class Identity(ModelServer):
        """A model that costs nothing, so only the framework is timed."""

        def predict(self, body: dict[str, Any]) -> list:
            return body["inputs"]

    class NoOpEstimator:
        """Answers class 0 for every row at no cost: the iris path without the scikit-learn call."""

        n_features_in_ = 4

        def predict(self, rows: Any) -> Any:
            return np.zeros(len(rows))

    def noop(body: dict[str, Any]) -> dict[str, Any]:
        return body

    results = []
    chain = Graph("chain")
    node = chain.to("s0", noop)
    for index in range(1, 10):
        node = node.to(f"s{index}", noop)
    chain_server = chain.to_mock_server()
    graph_us = best_of(lambda: chain_server.test(body={"x": 1}), repeat)
    direct_us = best_of(lambda: [noop({"x": 1}) for _ in range(10)], repeat)
    results.append(("10 no-op task steps", 10, graph_us, direct_us))

    model_graph = Graph("model")
    model_graph.to_router("models").add_model("m", Identity)
    model_server = model_graph.to_mock_server()
    graph_us = best_of(lambda: model_server.test("/v2/models/m/infer", body={"inputs": ROW}), repeat)
    direct_us = best_of(lambda: Identity("m").predict({"inputs": ROW}), repeat)
    results.append(("router + no-op model", 2, graph_us, direct_us))

    pre = Preprocess()
    for label, replacement in (("lr", None), ("a no-op estimator", NoOpEstimator())):
        iris = build().to_mock_server()
        lr = iris.graph["models"].models["lr"][0]
        lr.model = estimator = replacement or lr.model

        def direct_iris(estimator: Any = estimator) -> dict:
            body = pre.do({"inputs": ROW})
            outputs = estimator.predict(np.asarray(body["inputs"], dtype=np.float64)).tolist()
            return postprocess({"outputs": outputs})

        graph_us = best_of(lambda iris=iris: iris.test("/v2/models/lr/infer", body={"inputs": ROW}), repeat // 4)
        direct_us = best_of(direct_iris, repeat // 4)
        results.append((f"iris pre -> router -> {label} -> post", 4, graph_us, direct_us))
    return [
        {
            "graph": name,
            "steps": steps,
            "graph_us": graph,
            "direct_us": direct,
            "overhead_us_per_step": (graph - direct) / steps,
        }
        for name, steps, graph, direct in results
    ]


def child(tree: Path, repeat: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One measurement in a fresh process importing streamserve from ``tree``: its rows, and the
    machine's conditions meanwhile."""
    from cpu import Conditions

    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--tree", str(tree), "--repeat", str(repeat)]
    with Conditions(children=True) as conditions:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"mock_overhead --child --tree {tree} failed (exit {done.returncode}): {done.stderr[-800:]}")
    return json.loads(lines[-1]), conditions.summary()


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--repeat", type=int, help="calls per batch (default 20,000; 2,000 with --quick)")
    cli.add_argument("--rounds", type=int, help="measurements of each checkout (default 3; 2 with --quick)")
    cli.add_argument("--compare-tree", type=Path, help="another streamserve checkout, measured as 'before'")
    cli.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    cli.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    cli.add_argument("--tree", type=Path, default=BENCH.parent, help=argparse.SUPPRESS)
    args = cli.parse_args()
    repeat = args.repeat or (2_000 if args.quick else 20_000)
    if args.child:
        sys.path.insert(0, str(args.tree.resolve()))
        print(json.dumps(measure(repeat)))
        return

    from common import Table, checkout, save
    from cpu import describe
    from stats import fmt, orders, rounds_for, spread

    trees = {"after": BENCH.parent, **({"before": args.compare_tree.resolve()} if args.compare_tree else {})}
    rounds = rounds_for(len(trees), args.rounds, quick=args.quick)
    runs: list[dict[str, Any]] = []
    for number, order in enumerate(orders(list(trees), rounds), start=1):
        for position, name in enumerate(order, start=1):
            print(f"round {number}/{rounds}: {name} ({trees[name]}), {repeat:,} calls per batch", flush=True)
            rows, conditions = child(trees[name], repeat)
            runs.append({"round": number, "position": position, "tree": name, "rows": rows, "conditions": conditions})
    graphs = [row["graph"] for row in runs[0]["rows"]]
    labels = {name: checkout(path) for name, path in trees.items()}
    table = Table(
        f"mock server: graph call against the same work called directly, median (min-max) of {rounds} rounds",
        ["graph", "checkout", "steps", "graph µs", "direct µs", "overhead µs/step"],
    )
    figures: dict[str, dict[str, Any]] = {}
    for graph in graphs:
        for name in trees:
            rows = [row for run in runs if run["tree"] == name for row in run["rows"] if row["graph"] == graph]
            figure = {
                key: spread(row[key] for row in rows) for key in ("graph_us", "direct_us", "overhead_us_per_step")
            }
            figures.setdefault(graph, {})[name] = {"steps": rows[0]["steps"], **figure}
            table.add(
                graph,
                f"{name}: {labels[name]}" if len(trees) > 1 else labels[name],
                rows[0]["steps"],
                fmt(figure["graph_us"], 1),
                fmt(figure["direct_us"], 1),
                fmt(figure["overhead_us_per_step"], 2),
            )
    table.note = (
        f"goal: <= 10 µs per step on the iris path ({GOAL_GRAPH}); the no-op estimator row is that path "
        "without scikit-learn's call\nload average (1 min, start->end) and others' CPU share per run: "
        + "; ".join(f"{run['tree']} {describe(run['conditions'])}" for run in runs)
    )
    table.print()
    sys.argv[0] = str(Path(__file__).resolve())
    save("mock_overhead", args, [table], repeat=repeat, rounds=rounds, trees=labels, graphs=figures, runs=runs)


if __name__ == "__main__":
    main()
