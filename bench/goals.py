"""The performance goals, each with the figure measured for it, from bench/results/*.json only.

A goal is "met" or "not met" only on a full run (at least 3 runs of the figure, not --quick);
otherwise it says why it has no verdict. Also: the figures the README may quote, each with the
benchmark it comes from, and the other measurements of the goal's figures, so none is cherry-picked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import RESULTS
from stats import MIN_RUNS, fmt

from pipeline.runtime.settings import AgentSettings


def result(name: str) -> dict[str, Any] | None:
    """bench/results/<name>.json, or None."""
    path = RESULTS / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable or cut short: no result
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Goal:
    """One goal: its text, the benchmark that measures it, and how to read the figure from its JSON."""

    text: str
    source: str
    figure: Callable[[dict[str, Any]], dict[str, Any] | None]  # a spread: median, min, max, runs
    met: Callable[[float], bool]
    show: Callable[[dict[str, Any]], str]
    need: Callable[[dict[str, Any]], str]  # what meeting it would take, from the same results

    def row(self) -> list[str]:
        data = result(self.source)
        summary = self.figure(data) if data else None
        if not data or not summary or summary["median"] != summary["median"]:
            return [self.text, "not measured", f"`bench/{self.source}.py`", "no result", ""]
        runs = len(summary["runs"])
        where = f"`bench/{self.source}.py`, {data['date'][:10]}"
        measured = f"{self.show(summary)}, {runs} run{'s' if runs != 1 else ''}"
        met = self.met(summary["median"])
        need = "" if met else self._need(data)
        if data.get("quick"):
            return [self.text, measured, where, "--quick run: no verdict", need]
        if runs < MIN_RUNS:
            return [self.text, measured, where, f"under {MIN_RUNS} runs: no verdict", need]
        return [self.text, measured, where, "met" if met else "**not met**", need]

    def _need(self, data: dict[str, Any]) -> str:
        """What meeting it would take; "" when the results lack what the text needs."""
        try:
            return self.need(data)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return ""


def _get(data: dict[str, Any], *path: str) -> Any:
    """The value at ``path`` inside ``data``; None where any part is missing."""
    value: Any = data
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _mock(data: dict[str, Any]) -> dict[str, Any] | None:
    from mock_overhead import GOAL_GRAPH

    return _get(data, "graphs", GOAL_GRAPH, "after", "overhead_us_per_step")


def _p99(data: dict[str, Any]) -> dict[str, Any] | None:
    points = _get(data, "scenarios", "lr") or []
    return next((point["latency_ms"]["p99"] for point in points if point["label"] == "1,000/s"), None)


def _cost(data: dict[str, Any]) -> dict[str, Any] | None:
    return _get(data, "baseline", "ratio")


def _cost_show(summary: dict[str, Any]) -> str:
    data = result("cost") or {}
    ms = _get(data, "systems", "after", f"{data.get('rate', 1000):,.0f}/s", "whole deployment")
    absolute = f"{fmt(ms, 2)} CPU ms per request = " if ms else ""
    return f"{absolute}{fmt(summary, 2)}x the baseline ({_get(data, 'baseline', 'source')})"


def _floor_need(other: str, factor: float) -> Callable[[dict[str, Any]], str]:
    def need(data: dict[str, Any]) -> str:
        ours, theirs = _get(data, "systems", "streamserve"), _get(data, "systems", other)
        if not ours or not theirs:
            return ""
        text = (
            f"events/s from {fmt(ours.get('events_per_s'))} to >= {fmt(theirs['events_per_s']['median'] * factor)}; "
            f"draining, its workers spend {fmt(ours.get('cpu_system_saturated'))} CPU µs per event, the {other} "
            f"chain's {fmt(theirs.get('cpu_system_saturated'))}"
        )
        return text + _gap(ours, theirs)

    return need


def _gap(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """Where the CPU gap between streamserve's workers and a chain's goes, from hotpath's figures."""
    hops = _get(result("hotpath") or {}, "hops", "all four")
    mine, chain = _get(ours, "cpu_system_saturated", "median"), _get(theirs, "cpu_system_saturated", "median")
    if not hops or mine is None or chain is None:
        return " (where it goes: hotpath)"
    layer = hops["streamserve"] - hops["hand-written"]
    return (
        f". Of the {mine - chain:.0f} µs between them, {layer:.0f} is each hop's own work (in-process, hotpath's "
        f"hop table: streamserve's decode, step, route and encode {hops['streamserve']:.0f} µs per event over the "
        f"four hops, the hand-written work {hops['hand-written']:.0f}: the envelope, identity and per-event "
        f"isolation); the other {max(mine - chain - layer, 0):.0f} µs is per-record work around the steps (the "
        "delivery loop, the Kafka client on larger records, the event loop: hotpath's profiles). Meeting it "
        "takes both to the hand-written cost, or fewer hops (floor's fused row)"
    )


def _cost_need(data: dict[str, Any]) -> str:
    label = f"{data.get('rate', 1000):,.0f}/s"
    after = _get(data, "systems", "after", label) or {}
    base = _get(data, "systems", "before", label, "whole deployment", "median") or _get(
        data, "baseline", "reported_ms_per_request"
    )
    parts = ", ".join(f"{group} {fmt(after[group], 2)}" for group in ("workers", "broker", "driver") if group in after)
    need = f"<= {base / 2:.2f} CPU ms per request; now {parts}" if base else ""
    cores, whole = _get(data, "environment", "cores"), _get(after, "whole deployment", "median")
    if cores and whole and whole >= 0.98 * cores * 1000 / data.get("rate", 1000):  # every core busy all along
        need += (
            f". The machine's {cores} cores were busy the whole time ({cores} CPU s per second / "
            f"{data.get('rate', 1000):,.0f} requests = {cores * 1000 / data.get('rate', 1000):.2f} ms): this figure is "
            "the machine's ceiling, not the deployment's cost, and cannot show a cut"
        )
    return need + _per_batch(data, label)


def _per_batch(data: dict[str, Any], label: str) -> str:
    """Why a request costs more at a moderate rate than at saturation, from cost's and floor's figures."""
    saturated = _get(data, "systems", "after", "saturation", "whole deployment")
    systems = _get(result("floor") or {}, "systems") or {}
    figures = {name: systems.get(name) or {} for name in ("streamserve", "aiokafka", "confluent")}
    pairs = [
        (name, _get(found, "cpu_system_at_rate", "median"), _get(found, "cpu_system_saturated", "median"))
        for name, found in figures.items()
    ]
    pairs = [(name, rate, drain) for name, rate, drain in pairs if rate and drain]
    if not saturated or not pairs:
        return ""
    return (
        f". At saturation the same deployment costs {fmt(saturated, 2)} ms per request: at {label} each hop's batches "
        "hold a few records, and the Kafka client's work per fetch and produce request dominates. Floor's workers, "
        "CPU µs per event at 1,000/s against draining: "
        + ", ".join(f"{name} {rate:.0f} against {drain:.0f}" for name, rate, drain in pairs)
        + ". Meeting it takes fewer, larger requests per hop (longer waits: latency) or a client with a cheaper "
        "request path (the confluent chain's figure)"
    )


def _p99_need(data: dict[str, Any]) -> str:
    text = f"p99 from {fmt(_p99(data), 1)} to <= 30 ms"
    per_agent = next((t for t in data.get("tables", []) if t["title"].endswith("pooled over the runs), lr")), None)
    if per_agent and "1,000/s" in per_agent["headers"]:
        at = per_agent["headers"].index("1,000/s")
        text += "; at 1,000/s each agent adds (p50 / p95 ms) " + ", ".join(
            f"{row[0]} {row[at]}" for row in per_agent["rows"] if row[at] != "-"
        )
    fused = next((p for p in _get(data, "scenarios", "lr fused") or [] if p["label"] == "1,000/s"), None)
    floor = _get(result("floor") or {}, "systems", "aiokafka", "p99_ms")
    defaults = AgentSettings()
    text += (
        f": every hop may wait for its batch to fill (linger_ms {defaults.linger_ms}, fetch_max_wait_ms "
        f"{defaults.fetch_max_wait_ms}), so four hops on busy cores spend the budget before any work"
    )
    if floor:
        text += f" (the hand-written aiokafka chain on the same settings: p99 {fmt(floor, 1)} ms, floor)"
    if fused:
        text += f"; fused into two hops the path's p99 is {fmt(fused['latency_ms']['p99'], 1)} ms"
    return text + ". Meeting it takes fewer hops (fusion), shorter waits at more CPU per event (tuning) or spare cores"


def _peer_need(data: dict[str, Any]) -> str:
    best = _get(data, "mlserver", "systems", "mlserver best", "events_per_s", "median")
    ours = _get(data, "mlserver", "systems", "streamserve", "events_per_s")
    if not (best and ours):
        return ""
    text = f"events/s from {fmt(ours)} to >= {fmt(best * 10)}"
    chain = _get(result("floor") or {}, "systems", "aiokafka", "cpu_system_saturated", "median")
    if chain:
        text += (
            f": one lr worker at <= {1e6 / (best * 10):.0f} µs of a core per event (consume, predict, answer, "
            f"produce), where the hand-written aiokafka chain spends {chain / 4:.0f} µs per event per hop (floor); "
            "meeting it takes the step's per-event cost near a hand-written hop's (the floor goal's gap)"
        )
    return text


def _mock_need(data: dict[str, Any]) -> str:
    from mock_overhead import GOAL_GRAPH

    bare = _get(data, "graphs", GOAL_GRAPH.replace("-> lr ->", "-> a no-op estimator ->"), "after")
    without = f"; without scikit-learn's call: {fmt(bare['overhead_us_per_step'], 1)} µs" if bare else ""
    return (
        f"<= 10 µs per step{without}. A step costs one turn of the deployment's delivery loop for a batch of "
        "one (poll, decode, step, route, the inter-step codec, send), kept so the mock server answers as Kafka "
        "does (one delivery path); meeting it takes that turn, and scikit-learn's call beside it, at half today's "
        "cost"
    )


GOALS = [
    Goal(
        "streamserve >= 1.0x the best hand-written aiokafka chain's events/s, same hops",
        "floor",
        lambda data: _get(data, "ratios", "streamserve/aiokafka"),
        lambda value: value >= 1.0,
        lambda s: f"{fmt(s, 2)}x",
        _floor_need("aiokafka", 1.0),
    ),
    Goal(
        "streamserve >= 0.8x the confluent-kafka chain's events/s, same hops",
        "floor",
        lambda data: _get(data, "ratios", "streamserve/confluent"),
        lambda value: value >= 0.8,
        lambda s: f"{fmt(s, 2)}x",
        _floor_need("confluent", 0.8),
    ),
    Goal(
        "whole-deployment CPU per request at 1,000/s (workers + broker + load generator) halved",
        "cost",
        _cost,
        lambda value: value <= 0.5,
        _cost_show,
        _cost_need,
    ),
    Goal(
        "p99 <= 30 ms at 1,000 events/s through the iris lr path (pre -> router -> lr -> post)",
        "latency",
        _p99,
        lambda value: value <= 30,
        lambda s: f"{fmt(s, 1)} ms",
        _p99_need,
    ),
    Goal(
        ">= 10x the best MLServer configuration's events/s, same broker and model",
        "peer",
        lambda data: _get(data, "mlserver", "ratios", "streamserve/mlserver best"),
        lambda value: value >= 10,
        lambda s: f"{fmt(s, 1)}x ({_get(result('peer') or {}, 'mlserver', 'best')})",
        _peer_need,
    ),
    Goal(
        "mock server framework overhead <= 10 µs per step on the iris path (pre -> router -> lr -> post)",
        "mock_overhead",
        _mock,
        lambda value: value <= 10,
        lambda s: f"{fmt(s, 1)} µs",
        _mock_need,
    ),
]


def goals_table() -> dict[str, Any]:
    """The goals as a table (the shape of a benchmark's tables)."""
    return {
        "title": "the goals, from the latest runs (median (min-max) of the runs)",
        "headers": ["goal", "measured", "from", "", "to meet it"],
        "rows": [goal.row() for goal in GOALS],
    }


def also_measured() -> list[str]:
    """Other measurements of the goals' figures and the headline comparisons, as markdown lines."""
    lines = []
    floor, eos, peer = result("floor"), result("exactly_once"), result("peer")
    p99s = []
    if floor:
        p99s.append(
            f"floor.py (4 workers, after its backlog): {fmt(_get(floor, 'systems', 'streamserve', 'p99_ms'), 1)} ms"
        )
    if eos:
        p99s.append(
            f"exactly_once.py, at-least-once (4 workers, after its backlog): "
            f"{fmt(_get(eos, 'systems', 'at_least_once', 'p99_ms'), 1)} ms"
        )
    if p99s:
        lines.append(
            "- p99 at 1,000/s on the lr path, measured elsewhere in the same report: " + "; ".join(p99s) + ". "
            "latency.py runs all seven agents on a fresh deployment after a 1,000/s warm-up; the others measure "
            "right after draining a backlog through the same workers."
        )
    if floor and _get(floor, "ratios", "streamserve/before"):
        lines.append(
            f"- events/s against the checkout before the runtime change ({floor.get('compare_tree')}), floor.py: "
            f"{fmt(_get(floor, 'ratios', 'streamserve/before'), 2)}x."
        )
    if eos:
        lines.append(f"- exactly-once / at-least-once events/s, exactly_once.py: {fmt(eos['ratio'], 2)}.")
    if peer and _get(peer, "mlserver", "status") == "ok":
        defaults = _get(peer, "mlserver", "ratios", "streamserve/mlserver defaults")
        if defaults:
            lines.append(f"- against MLServer's defaults (parallel_workers=1, no batching): {fmt(defaults, 1)}x.")
    return lines


def quotes() -> list[str]:
    """Sentences the README may quote, each from this report."""
    lines = []
    floor, latency, peer, eos = result("floor"), result("latency"), result("peer"), result("exactly_once")
    if floor and _get(floor, "ratios", "streamserve/aiokafka"):
        lines.append(
            f"- The iris lr path drains at {fmt(_get(floor, 'ratios', 'streamserve/aiokafka'), 2)}x the events/s of "
            f"the same hops hand-written on aiokafka and {fmt(_get(floor, 'ratios', 'streamserve/confluent'), 2)}x "
            "on confluent-kafka (bench/floor.py)."
        )
    if latency and _p99(latency):
        lines.append(
            f"- p99 at 1,000 events/s through the iris lr path: {fmt(_p99(latency), 1)} ms (bench/latency.py)."
        )
    if peer and _get(peer, "mlserver", "ratios", "streamserve/mlserver best"):
        lines.append(
            f"- A single lr step serves {fmt(_get(peer, 'mlserver', 'ratios', 'streamserve/mlserver best'), 1)}x the "
            f"events/s of MLServer's best Kafka-mode configuration ({_get(peer, 'mlserver', 'best')}) (bench/peer.py)."
        )
    if eos:
        lines.append(
            f"- Exactly-once runs at {fmt(eos['ratio'], 2)}x at-least-once's events/s (bench/exactly_once.py)."
        )
    return lines
