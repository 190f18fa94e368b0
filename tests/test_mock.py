"""The mock server: a whole graph in-process, V2 paths, routing, ensembles, joins, errors."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from helpers import Broken, Constant, Doubler, MaxEnsemble, add_one, is_even, negate, times_ten
from sklearn.datasets import load_iris

from examples.iris.iris import build, model_dir
from pipeline import Graph, ProtocolError
from pipeline.mock import MockRequest
from steps import Dedupe, Ensemble, Filter, VotingEnsemble


@pytest.fixture(scope="module")
def iris():
    return build().to_mock_server()


def test_every_iris_model_matches_scikit_learn_on_the_same_rows(iris):
    features, _ = load_iris(return_X_y=True)
    rows = features[::7].tolist()
    models = {key: joblib.load(model_dir() / f"iris-{key}.joblib") for key in ("lr", "rf")}
    expected = {key: model.predict(np.asarray(rows)).tolist() for key, model in models.items()}
    for key in ("lr", "rf"):
        response = iris.test(f"/v2/models/{key}/infer", body={"inputs": rows})
        assert response["outputs"] == expected[key] and response["model_name"] == key
        assert response["species"][0] == ("setosa", "versicolor", "virginica")[expected[key][0]]
    assert expected["lr"] != expected["rf"]  # the rows include one the models disagree on
    votes = iris.test("/v2/models/vote/infer", body={"inputs": rows})["outputs"]
    assert votes == [min(pair) for pair in zip(expected["lr"], expected["rf"])]  # ties: the lowest label, as MLRun


def test_model_key_from_path_then_header_then_body_then_default(iris):
    """MLRun's precedence: the path's model wins over the body's."""
    row = {"inputs": [[6.7, 3.0, 5.2, 2.3]]}
    assert iris.test("/v2/models/lr/infer", body=row, headers={"model": "rf"})["model_name"] == "lr"
    assert iris.test("/v2/models/lr/infer", body={**row, "model": "rf"})["model_name"] == "lr"
    assert iris.test("/", body=row, headers={"model": "rf"})["model_name"] == "rf"
    assert iris.test("/", body={**row, "model": "rf"})["model_name"] == "rf"
    assert iris.test(body=row)["model_name"] == "vote"
    assert iris.test("/v2/models/infer", body=row)["model_name"] == "vote"  # the router-level path


def test_bad_requests_come_back_as_error_records(iris):
    unknown = iris.test(body={"model": "svm", "inputs": [[1, 2, 3, 4]]})
    assert unknown["error_type"] == "RoutingError" and unknown["step"] == "models"
    assert unknown["error"] == "router 'models': unknown model 'svm'; known models: lr, rf, vote"
    text = iris.test("/v2/models/lr/infer", body={"inputs": [["a", 2, 3, 4]]})
    assert text["step"] == "pre" and "could not convert string to float" in text["error"]
    missing = iris.test("/v2/models/lr/infer", body={"rows": []})
    assert missing["step"] == "pre" and missing["error_type"] == "KeyError"
    nan = iris.test("/v2/models/lr/infer", body={"inputs": [[float("nan"), 1, 1, 1]]})
    assert nan["step"] == "lr" and "NaN" in nan["error"]


def test_v2_paths_list_ready_versions_and_explain():
    graph = Graph("v2")
    graph.to_router("models").add_model("d", Doubler, version="2").add_model("c", Constant)
    server = graph.to_mock_server()
    assert server.test("/v2/models") == {"models": [{"name": "d", "version": "2"}, {"name": "c", "version": None}]}
    assert server.test("/v2/models/d/ready") == {"name": "d", "ready": True}
    assert server.test("/v2/models/d/versions/2/infer", body={"inputs": [[4]]})["outputs"] == [8]
    wrong = server.test("/v2/models/d/versions/1/infer", body={"inputs": [[4]]})
    assert wrong["error"] == "router 'models': model 'd' has no version '1'; versions: 2"
    explain = server.test("/v2/models/d/explain", body={"inputs": [[4]]})
    assert explain["error"] == "model 'd' does not implement explain(request)"
    with pytest.raises(ProtocolError, match="no model 'zz'"):
        server.test("/v2/models/zz/infer", body={"inputs": [[1]]})
    with pytest.raises(ProtocolError, match="not a V2 model path"):
        server.test("/predict", body={})


def _ensemble_graph(ensemble) -> Graph:
    graph = Graph("ens")
    router = graph.to_router("models", default="e")
    router.add_model("a", Constant, value=1.0).add_model("b", Constant, value=3.0)
    router.add_model("bad", Broken).add_model("e", ensemble)
    return graph


def test_ensembles_vote_average_weigh_and_merge_custom():
    body = {"inputs": [[0], [0]]}
    mean = _ensemble_graph(VotingEnsemble(["a", "b"], vote="regression")).to_mock_server()
    assert mean.test(body=body)["outputs"] == [2.0, 2.0]
    weighted = _ensemble_graph(VotingEnsemble(["a", "b"], vote="regression", weights=[3, 1]))
    assert weighted.to_mock_server().test(body=body)["outputs"] == [1.5, 1.5]
    majority = _ensemble_graph(VotingEnsemble(["a", "b"], weights=[1, 2])).to_mock_server()
    assert majority.test(body=body)["outputs"] == [3.0, 3.0]
    custom = _ensemble_graph(MaxEnsemble(["a", "b"])).to_mock_server()
    assert custom.test(body=body) | {"timestamp": None, "id": None} == {
        "id": None,
        "model_name": "e",
        "outputs": [3.0, 3.0],
        "timestamp": None,
    }
    member = mean.test("/v2/models/a/infer", body=body)
    assert member["model_name"] == "a" and member["outputs"] == [1.0, 1.0]


def test_a_failing_member_is_reported_or_tolerated_by_quorum():
    body = {"inputs": [[0]]}
    strict = _ensemble_graph(VotingEnsemble(["a", "bad"], vote="regression")).to_mock_server()
    error = strict.test(body=body)
    assert error["step"] == "e.join"
    assert error["error"] == ("join 'e.join': 1 of 2 parts answered, 2 needed; missing bad: ValueError: model exploded")
    quorum = _ensemble_graph(VotingEnsemble(["a", "bad"], vote="regression", min_results=1))
    answer = quorum.to_mock_server().test(body=body)
    assert answer["outputs"] == [1.0] and answer["parameters"] == {"missing": ["bad"]}


def test_versioned_members_vote_and_are_named_as_the_user_spelled_them():
    class Names(Ensemble):
        def merge(self, results):
            return {member: outputs for member, outputs in results.items()}

    def graph(ensemble) -> Graph:
        graph = Graph("vens")
        router = graph.to_router("models", default="e")
        router.add_model("a", Constant, value=1.0).add_model("m:v2", Constant, value=3.0)
        router.add_model("bad:v1", Broken).add_model("e", ensemble)
        return graph.to_mock_server()

    body = {"inputs": [[0], [0]]}
    weighted = graph(VotingEnsemble(["a", "m:v2"], vote="regression", weights={"a": 1, "m:v2": 3}, timeout_ms=100))
    assert weighted.test(body=body)["outputs"] == [2.5, 2.5]  # (1 * 1 + 3 * 3) / 4: m:v2 voted
    assert graph(Names(["a", "m:v2"], timeout_ms=100)).test(body=body)["outputs"] == {
        "a": [1.0, 1.0],
        "m:v2": [3.0, 3.0],
    }
    quorum = graph(VotingEnsemble(["m:v2", "bad:v1"], vote="regression", min_results=1, timeout_ms=100))
    answer = quorum.test(body=body)
    assert answer["outputs"] == [3.0, 3.0] and answer["parameters"] == {"missing": ["bad:v1"]}
    strict = graph(VotingEnsemble(["m:v2", "bad:v1"], vote="regression", timeout_ms=100)).test(body=body)
    assert (
        strict["error"] == "join 'e.join': 1 of 2 parts answered, 2 needed; missing bad:v1: ValueError: model exploded"
    )


def test_branches_meet_in_a_join_and_filters_drop_events():
    graph = Graph("flow")
    start = graph.to("start", add_one)
    start.to("ten", times_ten)
    start.to("neg", negate)
    graph.join("merged", after=["ten", "neg"]).to("even", Filter(is_even))
    server = graph.to_mock_server()
    assert server.test(body={"x": 1}) == {"x": 2, "ten": 20, "neg": -2}
    assert server.test(body={"x": 2}) is None


def test_a_body_result_path_cannot_hold_fails_that_request_alone():
    graph = Graph("paths")
    graph.to("size", len, result_path="r")
    requests = [MockRequest({"id": "a", "x": 1}), MockRequest([1, 2, 3]), MockRequest({"id": "b", "y": 2, "z": 3})]
    answers, errors = graph.to_mock_server().test_many(requests)
    assert answers == [{"id": "a", "x": 1, "r": 2}, {"id": "b", "y": 2, "z": 3, "r": 3}]
    assert [(e["step"], e["error_type"], e["error"]) for e in errors] == [
        ("size", "StepError", "result_path 'r' needs a dict body, got list")
    ]


def test_branches_without_join_each_reach_the_sink():
    graph = Graph("fan")
    graph.to("ten", times_ten)
    graph.to("neg", negate)
    assert graph.to_mock_server().test(body={"x": 3}) == [{"x": 3, "ten": 30}, {"x": 3, "neg": -3}]


def test_error_handler_sees_every_failure_and_a_broken_handler_is_contained():
    seen = []
    graph = Graph("errs")
    graph.to("inv", lambda body: 1 / body["x"])
    graph.error_handler("dlq", seen.append)
    server = graph.to_mock_server()
    assert server.test(body={"x": 0})["error_type"] == "ZeroDivisionError"
    assert seen[0]["step"] == "inv" and graph.dlq == "errs.dlq"
    graph.error_handler("dlq", lambda record: 1 / 0)
    assert graph.to_mock_server().test(body={"x": 0})["error_type"] == "ZeroDivisionError"


@pytest.mark.parametrize("strict", [False, True])
def test_a_long_lived_mock_server_keeps_no_record_once_read_and_never_reuses_an_offset(strict):
    """Every answer is read from the topics, then dropped: a notebook's millionth call holds as
    little as its first. Offsets go on, so a later request is never taken for a redelivery."""
    graph = _ensemble_graph(VotingEnsemble(["a", "b"], vote="regression"))
    graph["models"].to("dedupe", Dedupe()).to("post", add_one_to_outputs)
    server = graph.to_mock_server(strict=strict)
    for number in range(30):
        assert server.test(body={"inputs": [[number]]})["outputs"] == [3.0], number
        held = {topic: sum(map(len, logs)) for topic, logs in server.broker.topics.items()}
        assert not any(held.values()), held
    assert sum(server.broker.end_offsets(server.plan.source).values()) == 30
    answers, errors = server.test_many(MockRequest({"inputs": [[n]]}) for n in range(100))
    assert answers == [{**answer, "outputs": [3.0]} for answer in answers] and len(answers) == 100 and not errors


def add_one_to_outputs(body):
    return {**body, "outputs": [value + 1 for value in body["outputs"]]}


@pytest.mark.parametrize("strict", [False, True])
def test_a_request_key_that_is_not_bytes_is_refused_with_what_to_send(strict):
    server = _ensemble_graph(VotingEnsemble(["a", "b"], vote="regression")).to_mock_server(strict=strict)
    for key in ("cust-42", bytearray(b"cust-42")):
        with pytest.raises(ProtocolError, match="key must be bytes or None"):
            server.test_many([MockRequest({"inputs": [[5]]}), MockRequest({"inputs": [[1]]}, key=key)])
    answers, _ = server.test_many([MockRequest({"inputs": [[1]]}, key=b"cust-42")])
    assert [answer["outputs"] for answer in answers] == [[2.0]]  # nothing of the refused calls was sent
