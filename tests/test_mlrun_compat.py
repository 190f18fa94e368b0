"""MLRun's serving scenarios ported (its tests/serving and mock-server behaviour), each named by
the behaviour it checks; a representative subset also runs over Kafka against the mock server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from graphs import BATCHING_REQUESTS, Multiplier, batching_graph, caught, mlrun_graph, raiser
from test_parity import comparable, kafka_answers

from pipeline import Graph, GraphError, ProtocolError, StepError
from pipeline.client import Request
from pipeline.loading import load_graph
from pipeline.mock import MockRequest
from pipeline.plan import build_plan
from pipeline.topics import ensure_topics
from steps import ModelServer, VotingEnsemble

GRAPHS = Path(__file__).parent / "graphs.py"


@pytest.fixture(scope="module")
def server():
    return mlrun_graph().to_mock_server()


def test_v2_infer_with_class_args_read_by_get_param(server):
    assert server.test("/v2/models/m1/infer", body={"inputs": [5]})["outputs"] == 500  # a scalar output
    answer = server.test("/v2/models/m3/versions/v2/infer", body={"inputs": [5], "id": "abc"})
    assert answer["outputs"] == 2000 and answer["model_name"] == "m3" and answer["model_version"] == "v2"
    assert answer["id"] == "abc"  # the body's id is the answer's
    assert list(answer) == ["id", "model_name", "outputs", "timestamp", "model_version"]  # MLRun's order


def test_stream_mode_routes_by_body_model_and_operation(server):
    assert server.test(body={"model": "m2", "inputs": [5]})["outputs"] == 1000
    explained = server.test(body={"model": "m3:v2", "operation": "explain", "inputs": [5]})
    assert explained["outputs"] == {"explained": 5} and "timestamp" not in explained


def test_the_path_model_wins_over_the_body_model(server):
    assert server.test("/v2/models/m1/infer", body={"model": "m2", "inputs": [5]})["model_name"] == "m1"


def test_latest_version_is_the_default_and_an_unknown_version_is_an_error(server):
    assert server.test("/v2/models/m3/infer", body={"inputs": [1]})["outputs"] == 400
    wrong = server.test("/v2/models/m3/versions/v9/infer", body={"inputs": [1]})
    assert wrong["error_type"] == "RoutingError" and "no version 'v9'; versions: v1, v2" in wrong["error"]


def test_model_list_health_metadata_and_ready(server):
    listed = server.test("/v2/models/")["models"]
    assert {"name": "m3", "version": "v1"} in listed and {"name": "m3", "version": "v2"} in listed
    assert (
        server.test("/") == server.test("/v2/health") == {"name": server.graph.name, "version": "v2", "extensions": []}
    )
    assert server.test("/v2/models/m1") == {"name": "m1", "version": "", "inputs": [], "outputs": []}
    assert server.test("/v2/models/m3/versions/v2")["version"] == "v2"
    assert server.test("/v2/models/m1/ready") == {"name": "m1", "ready": True}
    with pytest.raises(ProtocolError, match="no model 'm4'"):
        server.test("/v2/models/m4")


def test_custom_operations_and_illegal_ones(server):
    echoed = server.test("/v2/models/m1/echo", body={"a": 1})
    assert echoed["echo"] == {"a": 1} and echoed["path"] == "/v2/models/m1/echo"  # no V2 envelope
    illegal = server.test("/v2/models/m1/xx", body={"inputs": [1]})
    assert illegal["error"] == "illegal model operation 'xx' for model 'm1'"


def test_request_validation_messages(server):
    assert server.test("/v2/models/m1/infer", body={"a": 1})["error"].startswith('Expected key "inputs"')
    assert server.test("/v2/models/m1/infer", body={"inputs": 5})["error"] == 'Expected "inputs" to be a list, got int'


def test_json_string_bodies_are_decoded_unless_the_content_type_says_otherwise(server):
    assert server.test("/v2/models/m1/infer", body='{"inputs": [5]}')["outputs"] == 500
    graph = Graph("ctype")
    graph.to("kind", lambda body: type(body).__name__)
    typed = graph.to_mock_server()
    assert typed.test(body='{"a": 1}') == "dict" and typed.test(body="[1, 2]") == "list"
    assert typed.test(body="[1, 2]", content_type="text/plain") == "str"
    with pytest.raises(ProtocolError, match="failed to decode the body as JSON"):
        typed.test(body="xx", content_type="application/json")


def test_ensemble_votes_over_the_prediction_column_of_dict_outputs(server):
    assert server.test("/v2/models/infer", body={"inputs": [5]})["outputs"] == {"predictions": [10.0]}
    assert server.test(body={"inputs": [5, 5]})["outputs"] == {"predictions": [10.0, 10.0]}


def test_ensemble_vote_type_inferred_ties_to_the_lowest_label_and_dict_weights():
    integral = VotingEnsemble(["a", "b"])
    assert integral.merge({"a": [1, 2], "b": [3, 6]}) == [1, 2]  # whole numbers: classification, ties low
    assert VotingEnsemble(["a", "b"]).merge({"a": [1.5], "b": [3.5]}) == [2.5]  # regression
    weighted = VotingEnsemble(["a", "b"], weights={"a": 3})  # b missing: weighs 0
    assert weighted.merge({"a": [1.5], "b": [3.5]}) == [1.5]
    with pytest.raises(StepError, match="not members"):
        VotingEnsemble(["a", "b"], weights={"c": 1})


def test_a_class_argument_named_like_a_method_is_refused_not_silently_applied():
    graph = Graph("args")
    with pytest.raises(GraphError, match=r"would replace Multiplier\.predict"):
        graph.to_router("models").add_model("m", Multiplier, predict=1)


def test_validate_returns_what_predict_gets_and_a_flat_point_is_one_row():
    seen = []

    class Validating(ModelServer):
        def validate(self, request, operation):
            return {"inputs": request["inputs"], "validated": True}

        def predict(self, request):
            seen.append(request)
            return {"probs": [0.1, 0.9]}

    graph = Graph("hooks")
    graph.to_router("models", default="v").add_model("v", Validating)
    answer = graph.to_mock_server().test(body={"inputs": [5.1, 3.5, 1.4, 0.2], "extra": 1})
    assert seen == [{"inputs": [5.1, 3.5, 1.4, 0.2], "validated": True}] and answer["outputs"] == {"probs": [0.1, 0.9]}


def test_batching_never_changes_what_predict_sees():
    class Scale(ModelServer):
        def predict(self, request):
            return [row[0] * request.get("scale", 5) for row in request["inputs"]]

    graph = Graph("batch")
    graph.to_router("models", default="s").add_model("s", Scale)
    server = graph.to_mock_server()
    answers, _ = server.test_many([MockRequest({"id": f"r{s}", "inputs": [[10]], "scale": s}) for s in (5, 50)])
    assert sorted(a["outputs"] for a in answers) == [[50], [500]]


def _alone(requests: list[dict]) -> dict:
    """What each request gets sent on its own (a batch of one), by id."""
    server = batching_graph().to_mock_server(strict=True)
    alone = [server.test(body=dict(body)) for body in requests]
    return comparable([a for a in alone if "error" not in a], [a for a in alone if "error" in a])


def _batched(requests: list[dict]) -> tuple[dict, list[int]]:
    """What each request gets sent with all the others (in one batch), by id; the calls' row counts."""
    server = batching_graph().to_mock_server(strict=True)
    answers, errors = server.test_many([MockRequest(dict(body)) for body in requests])
    assert errors == []
    return comparable(answers, errors), server.plan.agent("rows").step.calls


SUBSETS = {  # a batch of every request hides mixes behind rows that cannot stack at all
    "all": None,
    "tensors": ["int3", "int4", "float3", "int3-again", "text"],
    "int-float-tensors": ["int3", "float3", "int3-again"],
    "int-float-lists": ["ints", "floats", "bools", "ints-again"],
    "fields": ["scale-int", "scale-float", "scale-bool", "scale-list-int", "scale-list-float", "scale-int-again"],
}


@pytest.mark.parametrize("kind", list(SUBSETS))
def test_batched_answers_are_the_answers_each_request_gets_alone(kind):
    requests = [r for r in BATCHING_REQUESTS if SUBSETS[kind] is None or r["id"] in SUBSETS[kind]]
    got, calls = _batched(requests)
    assert {key: json.dumps(answer) for key, answer in got.items()} == {  # 2 and 2.0 differ in JSON
        key: json.dumps(answer) for key, answer in _alone(requests).items()
    }
    assert sum(calls) == sum(len(answer["outputs"]) for answer in got.values())  # no call failed and was redone
    if kind == "all":  # rows of one layout and equal fields still share a call
        assert sorted(calls, reverse=True)[:3] == [3, 3, 2]  # int3 + int3-again, ints + ints-again, scale-int twice
        assert got["int3"]["outputs"] == [[1, 2, 3]] and got["scale-float"]["outputs"] == [[2.0, 3.0]]


@pytest.mark.kafka
def test_over_kafka_batched_answers_are_the_answers_each_request_gets_alone(kafka, monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    reference = f"{GRAPHS}:batching_graph"
    plan = build_plan(load_graph(reference))
    expected = _alone(BATCHING_REQUESTS)
    ensure_topics(kafka, plan)
    sent = [Request(dict(body)) for body in BATCHING_REQUESTS]
    got, failed = kafka_answers(kafka, reference, plan, sent, set(expected), tmp_path / "worker.log")
    assert {key: json.dumps(answer) for key, answer in comparable(got, failed).items()} == {
        key: json.dumps(answer) for key, answer in expected.items()
    }


def test_flow_paths_before_context_names_and_async_handlers():
    def times_two(x):
        return x * 2

    def with_context(body, context=None):
        return {**body, "greeting": context.get_param("greeting")}

    async def doubled(body):
        await asyncio.sleep(0)
        return {**body, "doubled": body["x"] * 2}

    graph = Graph("flow", parameters={"greeting": "hi"})
    first = graph.to("x2", times_two, input_path="x", result_path="y.z")
    first.to("last", "json.dumps")
    graph.add_step("ctx", with_context, after=["x2"], before="last")
    graph.add_step("async", doubled, after=["ctx"], before="last")
    assert json.loads(graph.to_mock_server().test(body={"x": 5})) == {
        "x": 5,
        "y": {"z": 10},
        "greeting": "hi",
        "doubled": 10,
    }


def test_a_step_error_handler_answers_and_later_steps_do_not_run():
    later = []
    graph = Graph("errors")
    graph.to("bad", raiser).error_handler(caught).to("later", lambda body: later.append(body) or body)
    assert graph.to_mock_server().test(body={"x": 1}) == {"caught": {"x": 1}}
    assert later == []


def test_respond_marks_the_answer_and_later_steps_still_run():
    seen = []
    graph = Graph("respond")
    graph.to("answer", lambda body: {**body, "answered": True}).respond().to("audit", lambda b: seen.append(b) or b)
    assert graph.to_mock_server().test(body={"x": 1}) == {"x": 1, "answered": True}
    assert seen == [{"x": 1, "answered": True}]


def test_classes_from_main_round_trip_in_the_same_process():
    import __main__

    class Local:
        def do(self, body):
            return body

    Local.__module__, Local.__qualname__ = "__main__", "StreamserveTestLocal"
    __main__.StreamserveTestLocal = Local  # as a notebook defines it
    try:
        graph = Graph("notebook")
        graph.to("local", Local)
        assert Graph.from_dict(graph.to_dict()).to_mock_server().test(body={"a": 1}) == {"a": 1}
    finally:
        del __main__.StreamserveTestLocal
    with pytest.raises(GraphError, match="defined in a notebook or script"):
        Graph.from_dict(graph.to_dict())


REQUESTS = [
    ({"id": "v1", "inputs": [5]}, {"path": b"/v2/models/m3/versions/v1/infer"}),
    ({"id": "latest", "inputs": [5]}, {"path": b"/v2/models/m3/infer"}),
    ({"id": "body-model", "model": "m2", "inputs": [5]}, {}),
    ({"id": "explain", "model": "m1", "operation": "explain", "inputs": [5]}, {}),
    ({"id": "custom", "model": "m1", "operation": "echo"}, {}),
    ({"id": "ensemble", "inputs": [5, 6]}, {}),
    ({"id": "bad-version", "inputs": [5]}, {"path": b"/v2/models/m3/versions/v9/infer"}),
    ({"id": "no-inputs", "model": "m1"}, {}),
]


@pytest.mark.kafka
def test_over_kafka_the_mlrun_scenarios_answer_as_on_the_mock_server(kafka, monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    reference = f"{GRAPHS}:mlrun_graph"
    plan = build_plan(load_graph(reference))
    mock = plan.graph.to_mock_server(strict=True)
    answers, errors = mock.test_many(
        [
            MockRequest(body, h.get("path", b"/").decode(), {k: v for k, v in h.items() if k != "path"})
            for body, h in REQUESTS
        ]
    )
    expected = comparable(answers, errors)
    assert expected["custom"]["echo"] == {"id": "custom", "model": "m1", "operation": "echo"}
    ensure_topics(kafka, plan)
    sent = [Request(dict(body), headers=dict(h)) for body, h in REQUESTS]
    got, failed = kafka_answers(kafka, reference, plan, sent, set(expected), tmp_path / "worker.log")
    assert comparable(got, failed) == expected


def test_only_requests_with_the_same_plain_fields_and_row_layout_share_a_call():
    import numpy as np

    from pipeline.events import Event
    from steps.batching import groups

    bodies = [
        {"inputs": [[1.0, 2.0]], "scale": 1},
        {"inputs": [[3.0, 4.0]], "scale": 1},  # joins the first
        {"inputs": [[3.0, 4.0]], "scale": 1.0},
        {"inputs": [[3.0, 4.0]], "scale": True},
        {"inputs": [[3, 4]], "scale": 1},  # int rows: another layout
        {"inputs": [[3.0, 4.0]], "scale": np.float32(1)},  # not plain data: alone
        {"inputs": [[3.0, 4.0]], "scale": (1,)},  # a tuple: alone
        {"inputs": [[3.0, 4.0, 5.0]], "scale": 1},  # another width
        {"inputs": [[5.0, 6.0], [7.0, 8.0]]},
        {"id": "b", "inputs": [[9.0, 1.0]]},  # joins the one before: the id is per event
        {"inputs": [[5.0, 6.0], [[7.0], 8.0]]},  # a list among the values: alone
        {"inputs": [[5.0, 6.0], (7.0, 8.0)]},  # a tuple row among lists: alone
        {"inputs": [[5.0, 6.0], [7.0, None]]},  # None among the values: another layout
    ]
    pending = [(i, Event(body), body, body["inputs"]) for i, body in enumerate(bodies)]
    assert sorted(sorted(index for index, *_ in group) for group in groups(pending)) == [
        [0, 1],
        [2],
        [3],
        [4],
        [5],
        [6],
        [7],
        [8, 9],
        [10],
        [11],
        [12],
    ]
