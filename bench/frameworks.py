"""The built-in framework servers' own cost: each server's per-event overhead over its framework's
predict, one event at a time and batched, and the rows-per-call sweep behind each default
``max_batch_rows``.

For XGBoost, LightGBM, ONNX (onnxruntime) and PyTorch, one small model each (trained here on
scikit-learn's breast-cancer data, 30 features), every call on one thread as the servers default:

- framework: the framework's own predict on N rows (Booster.inplace_predict, Booster.predict,
  InferenceSession.run, the module under torch.inference_mode), µs per row;
- server: ``server.process(events)`` on N one-row events (parse, validate, predict, answer), µs per
  event; N = 1 (one by one) and N = --batch (one agent batch). The two are timed in alternating
  runs, and the overhead is the median of the per-pair differences;
- own cost: ``server.process(events)`` with the framework call replaced by its answer: the
  server's and the ModelServer contract's own work, free of the framework's timing noise;
- ``ModelServer`` alone: a model whose predict costs nothing, so the share of the overhead that
  is the ModelServer contract's (steps/model.py) rather than the framework server's shows;
- sweep: µs per event with ``max_batch_rows`` = 1, 4, 16, ... at N = --batch, and µs per event at
  N = 1 for the fixed-size calls of ONNX and PyTorch (their every call has max_batch_rows rows).

Each round runs in a fresh process; the table shows the median (min-max) over --rounds rounds.
Times are this thread's CPU time by default (every framework runs on the calling thread here),
so that other processes on a shared machine do not count; --clock wall for elapsed time.
Goals: <= 10 µs of overhead per event at N = 1, and batched >= 5x the one-by-one rate for the
vectorised frameworks.

Run: python bench/frameworks.py [--rounds 3] [--batch 256] [--quick]
Prints a table and writes bench/results/frameworks.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FRAMEWORKS = ("xgboost", "lightgbm", "onnx", "pytorch")
VECTORISED = ("onnx", "pytorch")


def train(folder: Path) -> None:
    """One small model per framework, saved as its server loads it."""
    import lightgbm
    import numpy as np
    import torch
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_breast_cancer(return_X_y=True)
    xgboost.XGBClassifier(n_estimators=100, max_depth=4, random_state=0).fit(features, labels).save_model(
        folder / "xgboost.json"
    )
    gbm = lightgbm.LGBMClassifier(n_estimators=100, random_state=0, verbose=-1).fit(features, labels)
    gbm.booster_.save_model(folder / "lightgbm.txt")
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(features, labels)
    onnx = to_onnx(linear, features[:1].astype(np.float32), options={"zipmap": False})
    (folder / "onnx.onnx").write_bytes(onnx.SerializeToString())
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)).eval()
    torch.jit.save(torch.jit.script(net), folder / "pytorch.pt")


def best_of(call: Callable[[], Any], repeat: int, runs: int = 5) -> float:
    """The fastest mean µs per call over ``runs`` runs of ``repeat`` calls."""
    return min(_timed(call, repeat) for _ in range(runs))


def paired(framework: Callable[[], Any], server: Callable[[], Any], repeat: int, pairs: int = 9) -> dict[str, float]:
    """Both calls timed in alternating runs: the fastest run of each, and the median of the
    per-pair differences (steadier than a difference of two fastest runs on a busy machine)."""
    alone, served, gaps = [], [], []
    for _ in range(pairs):
        alone.append(_timed(framework, repeat))
        served.append(_timed(server, repeat))
        gaps.append(served[-1] - alone[-1])
    return {"framework": min(alone), "server": min(served), "overhead": statistics.median(gaps)}


CLOCK = time.thread_time  # this thread's CPU time: other processes on a shared machine do not count; --clock wall


def _timed(call: Callable[[], Any], repeat: int) -> float:
    start = CLOCK()
    for _ in range(repeat):
        call()
    return (CLOCK() - start) / repeat * 1e6


def measure(folder: Path, batch: int, quick: bool) -> dict[str, Any]:
    """Every figure of one round, in this process."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    from pipeline.events import Event
    from steps import LightGBMModelServer, ModelServer, ONNXModelServer, PyTorchModelServer, XGBoostModelServer

    class Free(ModelServer):
        """A model whose predict costs nothing: the ModelServer contract alone."""

        def predict(self, request: dict[str, Any]) -> list:
            return [0] * len(request["inputs"])

    classes = {
        "xgboost": (XGBoostModelServer, {"model_path": folder / "xgboost.json"}),
        "lightgbm": (LightGBMModelServer, {"model_path": folder / "lightgbm.txt"}),
        "onnx": (ONNXModelServer, {"model_path": folder / "onnx.onnx"}),
        "pytorch": (PyTorchModelServer, {"model_path": folder / "pytorch.pt", "outputs": "logits"}),
    }
    rows = np.tile(load_breast_cancer().data, (4, 1))[:batch]
    budget = 2_000 if quick else 20_000  # rows per timed run

    def events(count: int) -> list[Event]:
        return [Event({"inputs": [row]}) for row in rows[:count].tolist()]

    def per_event(server: ModelServer, count: int) -> float:
        batch_events = events(count)
        return best_of(lambda: server.process(batch_events), max(3, budget // count)) / count

    free = Free(name="free")
    free.setup()
    result: dict[str, Any] = {"modelserver": {"one": per_event(free, 1), "batched": per_event(free, batch)}}
    result["modelserver"]["speedup"] = result["modelserver"]["one"] / result["modelserver"]["batched"]
    for name, (cls, options) in classes.items():
        server = cls(name=name, **options)
        server.setup()
        assert server.load_error is None, server.load_error
        direct = _direct(server)
        one, many = rows[:1].astype(server.input_dtype), rows[:batch].astype(server.input_dtype)
        first, everyone = events(1), events(batch)
        alone = paired(lambda: direct(one), lambda: server.process(first), budget)  # noqa: B023 (called at once)
        together = paired(lambda: direct(many), lambda: server.process(everyone), max(3, budget // batch))  # noqa: B023
        figures = {
            "framework_one": alone["framework"],
            "one": alone["server"],
            "overhead_one": alone["overhead"],
            "framework_batched": together["framework"] / batch,
            "batched": together["server"] / batch,
            "overhead_batched": together["overhead"] / batch,
            "max_batch_rows": server.max_batch_rows,
            "sweep": {},
        }
        figures["speedup"] = figures["one"] / figures["batched"]
        figures["own_one"], figures["own_batched"] = _own_cost(server, many, first, everyone, budget)
        for cap in (1, 4, 16, 64, 256) if quick else (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
            swept = cls(name=name, max_batch_rows=cap, **options)
            swept.setup()
            figures["sweep"][cap] = {"batched": per_event(swept, batch)}
            if name in VECTORISED:
                figures["sweep"][cap]["one"] = per_event(swept, 1)
        result[name] = figures
    return result


def _own_cost(server: Any, rows: Any, first: list[Any], everyone: list[Any], budget: int) -> tuple[float, float]:
    """µs per event of ``server.process`` with the framework call replaced by its answer, one
    event and batched: the server's and ModelServer's own work, without the framework's."""
    import numpy as np

    size = max(len(rows), server.call_rows or 1)
    answer = server.forward(np.resize(rows, (size, *rows.shape[1:])))
    real = server.forward
    server.forward = lambda given: answer[: len(given)]
    try:
        one = best_of(lambda: server.process(first), budget)
        batched = best_of(lambda: server.process(everyone), max(3, budget // len(everyone))) / len(everyone)
    finally:
        server.forward = real
    return one, batched


def _direct(server: Any) -> Callable[[Any], Any]:
    """The framework's own predict, configured as the server configures it."""
    if server.framework == "xgboost":
        return server._booster.inplace_predict
    if server.framework == "lightgbm":
        return lambda rows: server._booster.predict(rows, **server._options)
    if server.framework == "onnxruntime":
        session, name, output = server._session, server._input, server._output
        return lambda rows: session.run([output], {name: rows})
    import torch

    module = server.model

    def call(rows: Any) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(rows))

    return call


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max over rounds of every leaf figure."""

    def walk(parts: list[Any]) -> Any:
        if isinstance(parts[0], dict):
            return {key: walk([part[key] for part in parts]) for key in parts[0]}
        if isinstance(parts[0], (int, float)) and not isinstance(parts[0], bool):
            values = sorted(float(part) for part in parts)
            return {"median": statistics.median(values), "min": values[0], "max": values[-1]}
        return parts[0]

    return walk(rounds)


def table(summary: dict[str, Any], batch: int) -> str:
    """The summary as Markdown tables."""

    def cell(figure: dict[str, float]) -> str:
        return f"{figure['median']:.2f} ({figure['min']:.2f}-{figure['max']:.2f})"

    def times(figure: dict[str, float]) -> str:
        return f"{figure['median']:.1f}x ({figure['min']:.1f}-{figure['max']:.1f})"

    base = summary["modelserver"]
    lines = [
        f"µs per event, median (min-max) of {summary['rounds']} rounds; batched: {batch} one-row events in one "
        "process() call; overhead: server - framework",
        "",
        "| server | framework, 1 row | server, 1 event | overhead, 1 event | own cost, 1 event | "
        "framework, batched (per row) | server, batched | overhead, batched | own cost, batched | "
        "batched vs one by one | max_batch_rows |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in FRAMEWORKS:
        f = summary[name]
        lines.append(
            f"| {name} | {cell(f['framework_one'])} | {cell(f['one'])} | {cell(f['overhead_one'])} | "
            f"{cell(f['own_one'])} | {cell(f['framework_batched'])} | {cell(f['batched'])} | "
            f"{cell(f['overhead_batched'])} | {cell(f['own_batched'])} | {times(f['speedup'])} | "
            f"{f['max_batch_rows']['median']:.0f} |"
        )
    lines.append(
        f"| ModelServer alone (predict free) | - | {cell(base['one'])} | - | {cell(base['one'])} | - | "
        f"{cell(base['batched'])} | - | {cell(base['batched'])} | {times(base['speedup'])} | - |"
    )
    lines += [
        "",
        "overhead: server - framework, timed in alternating runs (it includes the rows a fixed-size call adds, and "
        "the framework running colder between our code); own cost: process() with the framework call replaced by "
        "its answer (this server's and ModelServer's own work).",
    ]
    caps = list(summary["xgboost"]["sweep"])
    lines += ["", f"µs per event by max_batch_rows ({batch} one-row events; ONNX/PyTorch also 1 event)", ""]
    lines.append("| server | " + " | ".join(str(cap) for cap in caps) + " |")
    lines.append("| --- |" + " --- |" * len(caps))
    for name in FRAMEWORKS:
        sweep = summary[name]["sweep"]
        lines.append(f"| {name}, batched | " + " | ".join(f"{sweep[c]['batched']['median']:.2f}" for c in caps) + " |")
        if name in VECTORISED:
            lines.append(f"| {name}, 1 event | " + " | ".join(f"{sweep[c]['one']['median']:.2f}" for c in caps) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=256, help="events per batched call (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a shorter sweep: a smoke run")
    parser.add_argument(
        "--clock",
        choices=["thread", "wall"],
        default="thread",
        help="thread: this thread's CPU time, as every framework runs on the calling thread (one thread each), "
        "so other processes on a shared machine do not count; wall: elapsed time (default: %(default)s)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a round: the model folder
    parser.add_argument("--out", default=str(BENCH / "results" / "frameworks.json"), help="JSON results file")
    args = parser.parse_args()
    if args.child:
        global CLOCK
        CLOCK = time.thread_time if args.clock == "thread" else time.perf_counter
        print(json.dumps(measure(Path(args.child), args.batch, args.quick)))
        return
    with tempfile.TemporaryDirectory(prefix="streamserve-bench-") as folder:
        train(Path(folder))
        rounds = []
        for index in range(args.rounds):
            command = [sys.executable, __file__, "--child", folder, "--batch", str(args.batch), "--clock", args.clock]
            done = subprocess.run(
                command + (["--quick"] if args.quick else []), cwd=ROOT, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                sys.exit(f"round {index + 1} failed:\n{done.stderr[-3000:]}")
            rounds.append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = summarise(rounds) | {"rounds": len(rounds)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results = {"batch": args.batch, "quick": args.quick, "clock": args.clock, "summary": summary}
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"clock: {args.clock}")
    markdown = table(summary, args.batch)
    print(markdown)
    if Path(args.out) == BENCH / "results" / "frameworks.json":  # the report's format too (run_all.py)
        from common import save

        save("frameworks", args, as_tables(markdown), summary=summary, batch=args.batch, clock=args.clock)


def as_tables(markdown: str) -> list[Any]:
    """The Markdown of :func:`table` as the report's tables: the text before each table is its title,
    the text after it its note."""
    from common import Table

    tables: list[Any] = []
    title = ""
    for block in markdown.split("\n\n"):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("|"):
            cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
            tables.append(Table(title, cells[0], [row for row in cells[2:]]))
            title = ""
        elif tables and not tables[-1].note and not title:
            tables[-1].note = block.strip()
        else:
            title = block.strip()
    return tables


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
