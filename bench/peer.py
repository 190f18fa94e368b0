"""Peers on the same machine: MLServer 1.7 in Kafka mode, tuned; MLRun's mock server.

1. MLServer (``mlserver==1.7.*`` + ``mlserver-sklearn``, in its own venv under bench/.venvs) serves
   the iris LogisticRegression file that streamserve's lr step loads, on the same broker, against
   streamserve's one-step graph ``bench/graphs.py:lr_graph`` (the same model alone); see
   bench/mlserver_kafka.py for how it is driven and its configurations.
   (a) Tuning: every configuration of ``mlserver_kafka.CONFIGS`` (or --configs) drains N requests
       sent open loop, once; the one with the most events/s is MLServer's best.
   (b) Rounds: streamserve, MLServer's best and MLServer's defaults, each started afresh, in an order
       rotated per round: N requests open loop (events/s: the steady rate over the middle 80% of the
       answers), then --rate events/s for --seconds (latency); CPU µs per event of each system's
       processes. Figures are the median (min-max) of the rounds; the ratio is taken round by round.
   Open loop rather than a backlog: MLServer's consumer has no group and starts at the end of its
   topic, so requests produced while it is stopped would never be read. Open loop, streamserve's
   events/s cannot exceed the rate this one producer sends at (shown), so it is understated if
   anything. N is 5,000 by default: a burst every configuration answered in full here. At 20,000
   (the 2026-11-25 report's burst) several configurations collapse to a few hundred events/s and
   drop answers, MLServer's lack of backpressure (bench/mlserver_kafka.py); --requests 20000 shows it.
2. MLRun (``mlrun`` + ``scikit-learn`` in another venv): its mock server on the iris graph
   pre -> router(lr) -> post (bench/mlrun_mock.py) against streamserve's on the same path: µs per
   ``server.test()`` call, --mock-rounds alternating measurements of each (the best of 5 batches of
   --mock-repeat calls in each), median (min-max).

A peer whose install fails is skipped with the reason printed and recorded.

Run: python bench/peer.py [--requests 5000] [--rate 1000] [--rounds N] [--configs all|"defaults;..."]
                          [--skip-mlserver] [--skip-mlrun] [--quick]
Prints tables and writes bench/results/peer.json.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from common import BENCH, Deployment, Table, Target, iris_requests, kafka, num, parser, run_load, save, warm_up
from measure import cpu_table, ratios, run_system, runs_table, summarise, throughput_table
from mlserver_kafka import CONFIGS, PACKAGES, Config, MLServer, by_key, v2_requests, version, wait_answering
from stats import fmt, orders, rounds_for, spread
from venvs import venv

MLRUN = ["mlrun", "scikit-learn"]


def tune(args: Any, broker: Any, bin_dir: Any, model_path: str, configs: list[Config], requests: list) -> Table:
    """(a): one open-loop drain per configuration; the table, best first. Sets ``args.best``: the most
    events/s among the configurations that answered every request (among all if none did)."""
    found: list[dict[str, Any]] = []
    mlserver_version = version(bin_dir)
    for config in configs:
        target = MLServer(broker.bootstrap, bin_dir, model_path, config, mlserver_version)
        print(f"tuning, {target.label}: {len(requests):,} open loop", flush=True)
        with target:
            wait_answering(target)
            run = run_load(target, v2_requests(requests), answer_id=by_key)
            dropped = target.dropped()
        found.append({"config": config, "run": run, "dropped": dropped})
        print(f"  {num(run.steady_rate())} events/s, {run.answered:,}/{run.sent:,} answered", flush=True)

    def rank(entry: dict[str, Any]) -> tuple[bool, float]:
        rate = entry["run"].steady_rate()
        return entry["run"].missing == 0, rate if rate == rate else 0.0

    found.sort(key=rank, reverse=True)
    args.best = found[0]["config"]
    table = Table(
        f"MLServer configurations, one open-loop drain of {len(requests):,} requests each (best first)",
        ["configuration", "events/s", "overall events/s", "answered", "dropped (KafkaTimeoutError in its log)"],
    )
    for entry in found:
        run = entry["run"]
        rate, overall = num(run.steady_rate()), num(run.overall_rate())
        table.add(entry["config"].name, rate, overall, f"{run.answered:,}/{run.sent:,}", f"{entry['dropped']:,}")
    table.note = (
        f"best: {args.best.name} (the most events/s of those that answered every request), measured again "
        "below in rounds against streamserve; why MLServer drops answers: bench/mlserver_kafka.py"
    )
    args.tuning = [{"config": e["config"].name, "dropped": e["dropped"], **e["run"].summary()} for e in found]
    return table


def compare_mlserver(args: Any, count: int) -> tuple[list[Table], dict[str, Any]]:
    """Tuning, then rounds of streamserve against MLServer's best and its defaults."""
    bin_dir, why = venv("mlserver", PACKAGES, args.install_timeout)
    if bin_dir is None:
        print(f"SKIPPED MLServer: {why}", flush=True)
        return [], {"status": f"skipped: {why}"}
    from examples.iris.iris import IrisModel

    lr = IrisModel("lr", algorithm="lr")
    lr.load()  # trains and saves the file on first use; streamserve's lr worker loads the same one
    model_path = str(lr.model_path)
    configs = CONFIGS if args.configs == "all" else [c for c in CONFIGS if c.name in args.configs.split(";")]
    drain, paced = iris_requests(count, seed=11), iris_requests(int(args.rate * args.seconds), seed=12)
    mlserver_version = version(bin_dir)
    runs: list[dict] = []
    with kafka(args.bootstrap) as broker:
        tuning = tune(args, broker, bin_dir, model_path, configs, drain)
        systems = ["streamserve", "mlserver best"] + (["mlserver defaults"] if args.best != Config() else [])
        rounds = rounds_for(len(systems), args.rounds, quick=args.quick)
        for number, order in enumerate(orders(systems, rounds), start=1):
            for position, system in enumerate(order, start=1):
                if system == "streamserve":
                    target: Target = Deployment(broker.bootstrap, "lr_graph")
                    result = run_system(
                        target, drain, paced, args.rate, broker.pid, warm=_warm_streamserve, pause=False
                    )
                else:
                    config = args.best if system == "mlserver best" else Config()
                    target = MLServer(broker.bootstrap, bin_dir, model_path, config, mlserver_version)
                    print(f"round {number}/{rounds}, {target.label}", flush=True)
                    result = run_system(
                        target,
                        v2_requests(drain),
                        v2_requests(paced),
                        args.rate,
                        broker.pid,
                        warm=wait_answering,
                        pause=False,
                        answer_id=by_key,
                    )
                runs.append({"round": number, "position": position, "system": system, **result})
                print(f"  {target.label}: {num(result['drain']['steady_events_per_s'])} events/s", flush=True)
    figures = summarise(runs, systems)
    found = ratios(runs, "streamserve", systems)
    main = throughput_table(
        f"iris LogisticRegression over Kafka: {count:,} requests open loop, then {args.rate:,.0f}/s: "
        f"median (min-max) of {rounds} rounds",
        figures,
        args.rate,
    )
    main.note = "; ".join(f"{name}: {fmt(value, 1)}x" for name, value in found.items()) + " (events/s)"
    sent = {
        system: spread(run["drain"]["send_events_per_s"] for run in runs if run["system"] == system)
        for system in systems
    }
    main.note += "\nthe driver sent the open-loop requests at " + "; ".join(
        f"{fmt(rate)}/s ({system})" for system, rate in sent.items()
    )
    tables = [tuning, main, cpu_table(figures, args.rate, open_loop=True), runs_table(runs, args.rate)]
    result = {
        "status": "ok",
        "version": mlserver_version,
        "best": args.best.name,
        "tuning": args.tuning,
        "rounds": rounds,
        "systems": figures,
        "ratios": found,
        "runs": runs,
    }
    return tables, result


def _warm_streamserve(target: Target) -> None:
    warm_up(target, iris_requests(20, seed=1))


def compare_mlrun(args: Any, table: Table) -> dict[str, Any]:
    """µs per mock-server call, ours and MLRun's, alternating --mock-rounds times: median (min-max)."""
    from mock_overhead import ROW
    from timing import best_of

    from examples.iris.iris import build

    server = build().to_mock_server()
    ours_runs: list[float] = []
    theirs_runs: list[float] = []
    theirs: dict[str, Any] | None = None

    def ours() -> None:
        ours_runs.append(best_of(lambda: server.test("/v2/models/lr/infer", body={"inputs": ROW}), args.mock_repeat))

    bin_dir, why = (None, "--skip-mlrun") if args.skip_mlrun else venv("mlrun", MLRUN, args.install_timeout)
    for number in range(args.mock_rounds):  # alternating which goes first, so a busy spell hits both
        if number % 2:
            ours()
        if bin_dir is not None:
            command = [str(bin_dir / "python"), str(BENCH / "mlrun_mock.py"), "--repeat", str(args.mock_repeat)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                why = f"bench/mlrun_mock.py failed (exit {done.returncode}): {done.stderr.strip()[-400:]}"
                bin_dir = None
            else:
                theirs = json.loads(lines[-1])
                theirs_runs.append(theirs["us_per_call"])
        if not number % 2:
            ours()
    mine = spread(ours_runs)
    table.add("streamserve mock server", fmt(mine, 1))
    result: dict[str, Any] = {"streamserve_us_per_call": mine}
    if theirs is None or bin_dir is None:
        print(f"SKIPPED MLRun: {why}", flush=True)
        return {"status": f"skipped: {why}", **result}
    other = spread(theirs_runs)
    table.add(f"MLRun {theirs['mlrun']} mock server", fmt(other, 1))
    table.note = f"MLRun / streamserve: {other['median'] / mine['median']:.2f}x the time per call (medians)"
    return {"status": "ok", **result, "mlrun": theirs["mlrun"], "mlrun_us_per_call": other, "answer": theirs["answer"]}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="open-loop requests (default 5,000; 2,000 with --quick)")
    cli.add_argument("--rate", type=float, default=1000, help="the steady load's events/s")
    cli.add_argument("--seconds", type=float, help="seconds of steady load (default 10; 3 with --quick)")
    cli.add_argument("--rounds", type=int, help="rounds against streamserve (default 3; 2 with --quick)")
    cli.add_argument(
        "--configs",
        default="all",
        help="MLServer configurations to tune over: 'all' or names separated by ';' (see bench/mlserver_kafka.py)",
    )
    cli.add_argument("--mock-repeat", type=int, help="mock-server calls per batch (default 5,000; 500 with --quick)")
    cli.add_argument("--mock-rounds", type=int, help="alternating mock-server measurements of each (default 3)")
    cli.add_argument("--install-timeout", type=float, default=900, help="seconds for each pip install")
    cli.add_argument("--skip-mlserver", action="store_true", help="leave MLServer out")
    cli.add_argument("--skip-mlrun", action="store_true", help="leave MLRun out (its install is heavy)")
    args = cli.parse_args()
    count = args.requests or (2_000 if args.quick else 5_000)
    args.seconds = args.seconds or (3 if args.quick else 10)
    args.mock_repeat = args.mock_repeat or (500 if args.quick else 5_000)
    args.mock_rounds = args.mock_rounds or 3

    tables: list[Table] = []
    mlserver: dict[str, Any] = {"status": "skipped: --skip-mlserver"}
    if not args.skip_mlserver:
        tables, mlserver = compare_mlserver(args, count)
    mock_table = Table("mock servers, iris pre -> router -> lr -> post, one row", ["server", "µs per call"])
    mlrun = compare_mlrun(args, mock_table)
    if mlrun["status"] != "ok":
        mock_table.note = f"{mock_table.note}\n{mlrun['status']}".strip()
    if mlserver["status"] != "ok":
        tables = [Table("MLServer over Kafka", ["status"], [[mlserver["status"]]])]
    tables.append(mock_table)
    for table in tables:
        table.print()
    save("peer", args, tables, requests=count, mlserver=mlserver, mlrun=mlrun)


if __name__ == "__main__":
    main()
