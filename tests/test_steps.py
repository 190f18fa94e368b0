"""Each step kind on its own: the batch contract, outcomes and error records."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from helpers import Doubler, PickyDoubler
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from pipeline import Event, GraphError, StepError
from pipeline.graph import as_step
from steps import Emit, Enrich, Fail, Filter, Join, ModelServer, SKLearnModelServer, TaskStep, VotingEnsemble


def events(*bodies, path="/"):
    return [Event(body, path=path) for body in bodies]


def test_task_from_callable_class_and_full_event():
    class Upper:
        def do(self, body):
            return body.upper()

    assert [o.event.body for o in as_step(Upper()).process(events("a", "b"))] == ["A", "B"]
    assert [o.event.body for o in as_step(str.lower).process(events("X"))] == ["x"]
    full = as_step(lambda event: event.derive(event.path), full_event=True)
    assert full.process(events("x", path="/v2/models/m/infer"))[0].event.body == "/v2/models/m/infer"


def test_task_returning_none_filters_and_raising_fails():
    step = TaskStep(lambda body: None if body < 0 else 1 / body)
    step.name = "inv"
    outcomes = step.process(events(-1, 0, 2))
    assert isinstance(outcomes[0], Fail) and outcomes[0].error.error_type == "ZeroDivisionError"
    assert outcomes[0].error.step == "inv"
    assert isinstance(outcomes[1], Emit) and outcomes[1].event.body == 0.5
    assert len(outcomes) == 2


def test_as_step_rejects_non_steps():
    with pytest.raises(GraphError, match="is not a step"):
        as_step(42)
    with pytest.raises(GraphError, match="need a class handler"):
        as_step(len, retries=3)


def test_filter_keeps_matching_events():
    kept = Filter(lambda body: body["x"] > 1).process(events({"x": 1}, {"x": 2}, {"x": 3}))
    assert [o.event.body["x"] for o in kept] == [2, 3]


def test_enrich_from_dict_and_callable_with_missing_policies():
    table = {"u1": {"tier": "gold"}}
    merged = Enrich(table, key="user").process(events({"user": "u1", "v": 1}))
    assert merged[0].event.body == {"user": "u1", "v": 1, "tier": "gold"}
    into = Enrich(lambda key: {"len": len(key)}, key="user", into="profile").process(events({"user": "abc"}))
    assert into[0].event.body["profile"] == {"len": 3}
    missing = events({"user": "nobody"})
    assert isinstance(Enrich(table, key="user").process(missing)[0], Fail)
    assert Enrich(table, key="user", on_missing="keep").process(missing)[0].event.body == {"user": "nobody"}
    assert Enrich(table, key="user", on_missing="drop").process(missing) == []
    assert "no key field" in Enrich(table, key="user").process(events({"id": 1}))[0].error.message


def test_model_batches_rows_of_all_events_into_one_predict():
    model = Doubler("d")
    model.load()
    outcomes = model.process(events({"inputs": [[1], [2]]}, {"inputs": [[3]]}, {"inputs": [[4], [5], [6]]}))
    assert model.calls == [6]
    assert [o.event.body["outputs"] for o in outcomes] == [[2, 4], [6], [8, 10, 12]]
    assert all(o.event.body["model_name"] == "d" for o in outcomes)


def test_model_isolates_a_bad_event_without_failing_its_batch():
    model = PickyDoubler("p")
    model.load()
    outcomes = model.process(events({"inputs": [[1]]}, {"inputs": [[-1]]}, {"inputs": [[3]]}, {"rows": 1}))
    failures = [o.error.message for o in outcomes if isinstance(o, Fail)]
    assert sorted(failures) == ["Expected key \"inputs\" in request body (got ['rows'])", "negative input"]
    assert [o.event.body["outputs"] for o in outcomes if isinstance(o, Emit)] == [[2], [6]]
    assert model.calls == [1, 1]  # the batch of 3 failed, then each event alone


def test_outputs_are_what_predict_returns_and_a_batch_not_one_per_row_goes_event_by_event():
    class Short(ModelServer):
        def load(self):
            self.calls = []

        def predict(self, body):
            self.calls.append(len(body["inputs"]))
            return [0]

    short = Short("short")
    short.load()
    assert short.process(events({"inputs": [[1], [2]]}))[0].event.body["outputs"] == [0]  # as MLRun: no check
    both = short.process(events({"inputs": [[1]]}, {"inputs": [[2], [3]]}))
    assert [o.event.body["outputs"] for o in both] == [[0], [0]] and short.calls == [2, 3, 1, 2]
    doubler = Doubler("d")
    doubler.load()
    ragged = doubler.process(events({"inputs": [[1, 2], [3]]}))[0]
    assert ragged.event.body["outputs"] == [2, 6]  # ragged rows reach a model that accepts them


def test_model_hooks_run_in_order_and_batching_can_be_switched_off():
    class Hooked(ModelServer):
        batching = False

        def load(self):
            self.seen = []

        def preprocess(self, body, operation):
            self.seen.append(("pre", operation))
            return {"inputs": [[v + 1 for v in row] for row in body["inputs"]]}

        def validate(self, body, operation):
            self.seen.append(("validate", operation))

        def predict(self, body):
            self.seen.append(("predict", len(body["inputs"])))
            return [sum(row) for row in body["inputs"]]

        def postprocess(self, body):
            self.seen.append(("post",))
            return {**body, "post": True}

    model = Hooked("h", version="3")
    model.load()
    out = model.process(events({"inputs": [[1, 2]]}, {"inputs": [[0, 0]]}))
    assert [o.event.body["outputs"] for o in out] == [[5], [2]]
    assert out[0].event.body["model_version"] == "3" and out[0].event.body["post"]
    one_event = [("pre", "infer"), ("validate", "infer"), ("predict", 1), ("post",)]
    assert model.seen == one_event * 2


def test_v2_tensor_inputs_are_reshaped():
    model = Doubler("d")
    model.load()
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    assert model.process(events(body))[0].event.body["outputs"] == [2, 6]


def test_sklearn_server_loads_a_joblib_file_and_checks_width(tmp_path):
    features, labels = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500).fit(features, labels)
    path = tmp_path / "lr.joblib"
    joblib.dump(estimator, path)
    server = SKLearnModelServer("lr", model_path=path)
    server.load()
    rows = features[::10].tolist()
    assert server.process(events({"inputs": rows}))[0].event.body["outputs"] == estimator.predict(rows).tolist()
    proba = SKLearnModelServer("p", model_path=path, method="predict_proba")
    proba.load()
    np.testing.assert_allclose(
        proba.process(events({"inputs": rows}))[0].event.body["outputs"], estimator.predict_proba(rows)
    )
    narrow = server.process(events({"inputs": [[1.0, 2.0]]}))[0]
    assert narrow.error.message == "model 'lr' expects 4 features per row, got 2"
    with pytest.raises(StepError, match="does not exist"):
        SKLearnModelServer("x", model_path=tmp_path / "missing.joblib").load()


def test_voting_ensemble_majority_weights_and_mean():
    vote = VotingEnsemble(["a", "b", "c"])
    assert vote.merge({"a": [1, 0], "b": [1, 2], "c": [0, 2]}) == [1, 2]
    weighted = VotingEnsemble(["a", "b", "c"], weights=[3, 1, 1])
    assert weighted.merge({"a": [0], "b": [1], "c": [1]}) == [0]
    mean = VotingEnsemble(["a", "b"], vote="regression", weights=[3, 1])
    assert mean.merge({"a": [1.0, 2.0], "b": [5.0, 2.0]}) == [2.0, 2.0]
    with pytest.raises(StepError, match="2 weights given for 3 members"):
        VotingEnsemble(["a", "b", "c"], weights=[1, 2])


def test_join_waits_for_all_parts_ignores_duplicates_and_expires():
    join = Join(["a", "b"], min_results=1, timeout_ms=0)
    join.name = "j"

    def part(event_id, name, body):
        return Event(body, event_id, uid=event_id, meta={"part": name})

    assert join.process([part("e1", "a", {"x": 1}), part("e1", "a", {"x": 9})]) == []
    assert [e.id for e in join.held()] == ["e1"]
    done = join.process([part("e1", "b", {"y": 2})])
    assert done[0].event.body == {"x": 1, "y": 2}
    assert join.process([part("e1", "b", {"y": 3})]) == []  # redelivered after close
    join.process([part("e2", "a", {"x": 1})])
    expired = join.expire(float("inf"))
    assert expired[0].event.body == {"x": 1, "parameters": {"missing": ["b"]}}
    strict = Join(["a", "b"])
    strict.name = "s"
    strict.process([part("e3", "a", {})])
    failure = strict.expire(float("inf"))[0]
    assert failure.error.message == "join 's': 1 of 2 parts answered, 2 needed; missing b: no result in time"


def test_join_bounds_its_open_state():
    join = Join(["a", "b"], min_results=1, max_pending=2, remember=2)
    results = join.process([Event({}, f"e{i}", uid=f"e{i}", meta={"part": "a"}) for i in range(5)])
    assert len(results) == 3 and len(list(join.held())) == 2 and len(join._closed) == 2
