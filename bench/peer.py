"""Peers on the same machine: MLServer 1.7 in Kafka mode, and MLRun's mock server.

1. MLServer (``mlserver==1.7.*`` + ``mlserver-sklearn``, in its own venv under bench/.venvs) serves
   the iris LogisticRegression file that streamserve's lr step loads, reading its input topic and
   writing its output topic on the same broker, in the same run as streamserve's one-step graph
   ``bench/graphs.py:lr_graph`` (the same model alone). Both get the same requests: N open loop
   (as fast as one producer goes; events/s is the steady rate over the middle 80% of answers),
   then --rate events/s for latency. MLServer takes V2 tensors (``{"inputs": [{"name", "shape",
   "datatype", "data"}]}``) and the header ``mlserver-model``; its Kafka key becomes the request id.
   It runs with its defaults (parallel_workers=1, no adaptive batching), debug off, and once more
   with adaptive batching (max_batch_size 500, max_batch_time 5 ms, streamserve's batch bounds).
   Its consumer has no group and starts at the end of the topic, so it is warmed up until it answers.
2. MLRun (``mlrun`` + ``scikit-learn`` in another venv, when pip installs it in --install-timeout):
   the mock server on the iris graph pre -> router(lr) -> post (bench/mlrun_mock.py) against
   streamserve's mock server on the same path, µs per ``server.test()`` call (best of --mock-rounds
   alternating measurements, so a busy spell on the machine hits both).

A peer whose install fails is skipped with the reason printed and recorded.

Run: python bench/peer.py [--requests 20000] [--rate 1000] [--skip-mlrun] [--quick]
Prints tables and writes bench/results/peer.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    RESULTS,
    Commands,
    Deployment,
    Table,
    Target,
    create,
    fresh_name,
    iris_requests,
    kafka,
    num,
    parser,
    run_load,
    save,
    warm_up,
)

from pipeline.broker import _free_port  # the embedded broker's own port picker
from pipeline.client import Request

VENVS = BENCH / ".venvs"
# uvloop 0.22 breaks MLServer 1.7's parallel inference workers at start (SeldonIO/MLServer#2286).
MLSERVER = ["mlserver==1.7.*", "mlserver-sklearn==1.7.*", "uvloop<0.22"]
MLRUN = ["mlrun", "scikit-learn"]
MODEL = "iris-lr"


def venv(name: str, packages: list[str], timeout_s: float) -> tuple[Path | None, str]:
    """``bench/.venvs/<name>`` with ``packages``: (its bin folder, "") or (None, why not)."""
    home, spec = VENVS / name, " ".join(packages)
    marker, log = home / "installed.txt", VENVS / f"{name}.pip.log"
    if marker.is_file() and marker.read_text() == spec:
        return home / "bin", ""
    VENVS.mkdir(parents=True, exist_ok=True)
    print(f"installing {spec} into {home.relative_to(BENCH.parent)} (up to {timeout_s:.0f} s) ...", flush=True)
    started = time.monotonic()
    try:
        if not (home / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, capture_output=True, timeout=120)
        with open(log, "wb") as out:
            left = max(1.0, timeout_s - (time.monotonic() - started))
            done = subprocess.run(
                [str(home / "bin" / "pip"), "install", *packages], stdout=out, stderr=subprocess.STDOUT, timeout=left
            )
    except subprocess.TimeoutExpired:
        return None, f"pip install {spec} did not finish within {timeout_s:.0f} s (log: {log})"
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the venv {home}: {exc}"
    if done.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        return None, f"pip install {spec} failed (exit {done.returncode}): {tail} (log: {log})"
    marker.write_text(spec)
    return home / "bin", ""


class MLServer(Target):
    """``mlserver start`` on a folder holding settings.json and the model's model-settings.json."""

    entry = "mlserver"
    dlq = None  # MLServer only logs failures

    def __init__(self, bootstrap: str, bin_dir: Path, model_path: str, *, batching: bool) -> None:
        self.bootstrap, self.model_path, self.batching = bootstrap, model_path, batching
        self.name = fresh_name("mlserver")
        self.source, self.sink = f"{self.name}.input", f"{self.name}.output"
        self.folder = RESULTS / "logs" / self.name
        version = subprocess.run(
            [str(bin_dir / "python"), "-c", "import mlserver; print(mlserver.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.label = f"MLServer {version} Kafka mode" + (", adaptive batching" if batching else ", defaults")
        self.workers = Commands(
            bootstrap, lambda *_: [str(bin_dir / "mlserver"), "start", "."], self.folder, cwd=self.folder
        )

    def __enter__(self) -> MLServer:
        create(self.bootstrap, [self.source, self.sink])
        settings = {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": _free_port(),
            "grpc_port": _free_port(),
            "metrics_port": _free_port(),
            "kafka_enabled": True,
            "kafka_servers": self.bootstrap,
            "kafka_topic_input": self.source,
            "kafka_topic_output": self.sink,
        }
        model: dict[str, Any] = {
            "name": MODEL,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": self.model_path, "version": "v1"},
        }
        if self.batching:
            model.update(max_batch_size=500, max_batch_time=0.005)
        (self.folder / MODEL).mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(json.dumps(settings, indent=2))
        (self.folder / MODEL / "model-settings.json").write_text(json.dumps(model, indent=2))
        self.workers.start(self.entry)
        return self


def v2_requests(requests: list[Request]) -> list[Request]:
    """The same requests as V2 tensors for MLServer, keyed by their id."""
    converted = []
    for request in requests:
        rows = request.body["inputs"]
        tensor = {"name": "predict", "shape": [len(rows), len(rows[0])], "datatype": "FP64"}
        body = {"id": request.id, "inputs": [{**tensor, "data": [value for row in rows for value in row]}]}
        converted.append(Request(body, key=request.id.encode(), headers={"mlserver-model": MODEL.encode()}))
    return converted


def wait_answering(target: Target, timeout_s: float = 180) -> None:
    """Send one request at a time until one is answered: a consumer that starts at the topic's end."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return warm_up(target, v2_requests(iris_requests(1, seed=int(time.time()))), timeout_s=4)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def compare_mlserver(args: Any, count: int, table: Table) -> dict[str, Any]:
    bin_dir, why = venv("mlserver", MLSERVER, args.install_timeout)
    if bin_dir is None:
        print(f"SKIPPED MLServer: {why}", flush=True)
        return {"status": f"skipped: {why}"}
    from examples.iris.iris import IrisModel

    lr = IrisModel("lr", algorithm="lr")
    lr.load()  # trains and saves the file on first use; streamserve's lr worker loads the same one
    load, steady = iris_requests(count, seed=11), iris_requests(int(args.rate * args.seconds), seed=12)
    runs = {}
    with kafka(args.bootstrap) as broker:
        targets = [
            Deployment(broker.bootstrap, "lr_graph"),
            MLServer(broker.bootstrap, bin_dir, str(lr.model_path), batching=False),
            MLServer(broker.bootstrap, bin_dir, str(lr.model_path), batching=True),
        ]
        for target in targets:
            convert = v2_requests if isinstance(target, MLServer) else list
            print(
                f"{target.label}: warming up, then {len(load):,} open loop and {len(steady):,} at {args.rate:,.0f}/s",
                flush=True,
            )
            with target:
                if isinstance(target, MLServer):
                    wait_answering(target)
                else:
                    warm_up(target, iris_requests(20, seed=1))
                burst = run_load(target, convert(load))
                paced = run_load(target, convert(steady), rate=args.rate)
            latency = paced.latency_ms()
            table.add(
                target.label,
                num(burst.steady_rate()),
                num(burst.overall_rate()),
                *(num(latency[name], 1) for name in ("p50", "p95", "p99")),
                f"{burst.answered + paced.answered:,}/{burst.sent + paced.sent:,}",
            )
            runs[target.label] = {"open_loop": burst.summary(), f"rate_{args.rate:.0f}": paced.summary()}
    return {"status": "ok", "runs": runs}


def compare_mlrun(args: Any, table: Table) -> dict[str, Any]:
    """µs per mock-server call, ours and MLRun's, alternating --mock-rounds times; the best of each."""
    from mock_overhead import ROW
    from timing import best_of

    from examples.iris.iris import build

    server = build().to_mock_server()
    ours_runs, theirs_runs, theirs = [], [], None

    def ours() -> None:
        ours_runs.append(best_of(lambda: server.test("/v2/models/lr/infer", body={"inputs": ROW}), args.mock_repeat))

    bin_dir, why = (None, "--skip-mlrun") if args.skip_mlrun else venv("mlrun", MLRUN, args.install_timeout)
    for _ in range(args.mock_rounds):  # alternating, so a busy spell on the machine hits both
        ours()
        if bin_dir is None:
            continue
        command = [str(bin_dir / "python"), str(BENCH / "mlrun_mock.py"), "--repeat", str(args.mock_repeat)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            why = f"bench/mlrun_mock.py failed (exit {done.returncode}): {done.stderr.strip()[-400:]}"
            bin_dir = None
            continue
        theirs = json.loads(lines[-1])
        theirs_runs.append(theirs["us_per_call"])
    best = min(ours_runs)
    table.add("streamserve mock server", num(best, 1))
    result: dict[str, Any] = {"streamserve_us_per_call": best, "streamserve_runs": ours_runs}
    if theirs is None or bin_dir is None:
        print(f"SKIPPED MLRun: {why}", flush=True)
        return {"status": f"skipped: {why}", **result}
    table.add(f"MLRun {theirs['mlrun']} mock server", num(min(theirs_runs), 1))
    table.note = f"MLRun / streamserve: {min(theirs_runs) / best:.2f}x the time per call"
    return {
        "status": "ok",
        **result,
        "mlrun": theirs["mlrun"],
        "mlrun_us_per_call": min(theirs_runs),
        "mlrun_runs": theirs_runs,
        "mlrun_answer": theirs["answer"],
    }


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="open-loop requests (default 20,000; 3,000 with --quick)")
    cli.add_argument("--rate", type=float, default=1000, help="the steady load's events/s")
    cli.add_argument("--seconds", type=float, help="seconds of steady load (default 10; 3 with --quick)")
    cli.add_argument("--mock-repeat", type=int, help="mock-server calls per round (default 5,000; 500 with --quick)")
    cli.add_argument("--mock-rounds", type=int, default=3, help="alternating mock-server measurements of each")
    cli.add_argument("--install-timeout", type=float, default=900, help="seconds for each pip install")
    cli.add_argument("--skip-mlrun", action="store_true", help="leave MLRun out (its install is heavy)")
    args = cli.parse_args()
    count = args.requests or (3_000 if args.quick else 20_000)
    args.seconds = args.seconds or (3 if args.quick else 10)
    args.mock_repeat = args.mock_repeat or (500 if args.quick else 5_000)

    kafka_table = Table(
        f"iris LogisticRegression over Kafka: {count:,} requests open loop, then {args.rate:,.0f}/s for latency",
        ["system", "events/s", "overall events/s", "p50 ms", "p95 ms", "p99 ms", "answered"],
    )
    mock_table = Table("mock servers, iris pre -> router -> lr -> post, one row", ["server", "µs per call"])
    mlserver = compare_mlserver(args, count, kafka_table)
    mlrun = compare_mlrun(args, mock_table)
    for table, result in ((kafka_table, mlserver), (mock_table, mlrun)):
        if result["status"] != "ok":
            table.note = f"{table.note}\n{result['status']}".strip()
        table.print()
    save("peer", args, [kafka_table, mock_table], requests=count, mlserver=mlserver, mlrun=mlrun)


if __name__ == "__main__":
    main()
