"""The built-in framework model servers (XGBoost, LightGBM, ONNX, PyTorch) and their registry.

Every model is trained here at test time (tests/framework_graphs.py) and served by registry name
on the strict mock server and over Kafka; every answer is compared with the framework called
directly on the same rows, for a batch of mixed-size requests, and bad inputs and corrupt model
files must come back as dead letters naming the model and what it expected.

CI installs all four frameworks with the ``frameworks`` extra (``pip install -e ".[test,frameworks]"``;
PyTorch from PyPI included). Without them these tests fail; they never skip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import onnxruntime
import pytest
import torch
import xgboost
from framework_graphs import CORRUPT, MODELS_ENV, WineNet, frameworks_graph, train_models, wine

from pipeline import Graph, GraphError
from pipeline.client import Request, consume, produce
from pipeline.codec import decode_response, encode_response
from pipeline.importing import import_object
from pipeline.loading import load_graph
from pipeline.mock import MockRequest
from pipeline.models_cli import register
from pipeline.plan import build_plan
from pipeline.topics import ensure_topics
from steps import (
    BUILTIN_MODELS,
    FrameworkModelServer,
    ModelServer,
    ONNXModelServer,
    PyTorchModelServer,
    XGBoostModelServer,
)
from steps.registry import builtin_model

GRAPHS = Path(__file__).parent / "framework_graphs.py"
SIZES = (1, "flat", 3, 1, 7, 2, 1, 5)  # rows per request; "flat": one data point, not a list of rows
SERVED = (
    *("xgb", "xgb_proba", "xgb_sklearn", "xgb_binary", "xgb_binary_proba"),
    *("lgb", "lgb_proba", "lgb_sklearn", "lgb_binary", "lgb_binary_proba"),
    *("onnx", "onnx_proba", "onnx_zipmap", "torch", "torch_state", "torch_export"),
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("framework-models")
    train_models(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODELS_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def server(models):
    return frameworks_graph().to_mock_server(strict=True)


def references(folder: Path) -> dict[str, Callable[[np.ndarray], Any]]:
    """Each served model's framework, called directly (as its server is configured: one thread)."""
    classifier = joblib.load(folder / "xgb.joblib")  # the XGBClassifier whose booster xgb.json and xgb.ubj hold
    booster = xgboost.Booster(model_file=str(folder / "xgb.ubj"))
    binary = xgboost.XGBClassifier()
    binary.load_model(folder / "xgb_binary.json")
    gbm = joblib.load(folder / "lgb.joblib")  # the LGBMClassifier whose booster lgb.txt holds
    one_class = joblib.load(folder / "lgb_binary.joblib")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    linear = onnxruntime.InferenceSession(str(folder / "lr.onnx"), options, providers=["CPUExecutionProvider"])
    forest = onnxruntime.InferenceSession(str(folder / "rf_zipmap.onnx"), options, providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(folder / "net.pt"))
    state = WineNet()
    state.load_state_dict(torch.load(folder / "net.pth", weights_only=True))
    state.eval()
    exported = torch.export.load(str(folder / "net.pt2")).module()

    def floats(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(floats(x))

    def torch_call(module: Any, after: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], Any]:
        def call(x: np.ndarray) -> Any:
            with torch.inference_mode():
                return after(module(tensor(x))).numpy()

        return call

    return {
        "xgb": classifier.predict,
        "xgb_proba": lambda x: booster.predict(xgboost.DMatrix(x)),
        "xgb_sklearn": classifier.predict_proba,
        "xgb_binary": binary.predict,
        "xgb_binary_proba": binary.predict_proba,
        "lgb": gbm.predict,
        "lgb_proba": gbm.predict_proba,
        "lgb_sklearn": gbm.predict,
        "lgb_binary": lambda x: one_class.predict(x).astype(int),  # its labels are booleans (fitted on y == 1)
        "lgb_binary_proba": one_class.predict_proba,
        "onnx": lambda x: linear.run(["label"], {"X": floats(x)})[0],
        "onnx_proba": lambda x: linear.run(["probabilities"], {"X": floats(x)})[0],
        "onnx_zipmap": lambda x: [[row[k] for k in sorted(row)] for row in forest.run(None, {"X": floats(x)})[1]],
        "torch": torch_call(script, lambda out: torch.softmax(out, dim=-1)),
        "torch_state": torch_call(state, lambda out: out.argmax(dim=-1)),
        "torch_export": torch_call(exported, lambda out: out.argmax(dim=-1)),
    }


def loaded(server: Any, key: str) -> FrameworkModelServer:
    return server.graph["models"].models[key][0]


def framework_answer(server: Any, call: Callable[[np.ndarray], Any], key: str, inputs: Any) -> list:
    """What the framework answers for a request's rows. Where the server gives every framework
    call the same number of rows (``call_rows``: ONNX and PyTorch, whose outputs otherwise change
    in their last bits with the batch size), so does this, filling up with copies of the first
    row; the answer for the rows alone is then equal to within float rounding."""
    rows = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
    size = loaded(server, key).call_rows
    if size is None:
        return np.asarray(call(rows)).tolist()
    parts = []
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        filled = np.concatenate([part, np.repeat(part[:1], size - len(part), axis=0)])
        parts.append(np.asarray(call(filled))[: len(part)])
    answer = np.concatenate(parts)
    assert np.allclose(np.asarray(call(rows), dtype=np.float64), answer.astype(np.float64), rtol=1e-5, atol=1e-7)
    return answer.tolist()


def good_requests() -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """Mixed-size requests for every served model (and the vote), rows of the wine data scaled a little."""
    features, _ = wine()
    made, start = [], 0
    for key in (*SERVED, "vote"):
        for index, size in enumerate(SIZES):
            count = 1 if size == "flat" else size
            rows = (features[start % 170 : start % 170 + count] * (1 + 0.01 * index)).tolist()
            start += 7
            made.append(({"id": f"{key}-{index}", "inputs": rows[0] if size == "flat" else rows}, {"model": key}))
    return made


ROW = [13.2, 1.8, 2.1, 17.0, 100.0, 2.6, 2.7, 0.3, 1.7, 4.8, 1.0, 3.2, 1050.0]
NAN_ROW = [float("nan"), *ROW[1:]]
BAD = [  # (id, model, inputs, the error type and the words the dead letter must hold)
    ("width-xgb", "xgb", [ROW[:12]], "StepError", "model 'xgb' expects rows of 13 float64 values, got rows of 12"),
    ("width-lgb", "lgb", [[*ROW, 1.0]], "StepError", "model 'lgb' expects rows of 13 float64 values, got rows of 14"),
    ("width-onnx", "onnx", [ROW[:3]], "StepError", "model 'onnx' expects rows of 13 float32 values, got rows of 3"),
    ("width-torch", "torch", [ROW[:3]], "StepError", "model 'torch' expects rows of 13 float32 values, got rows of 3"),
    ("ragged", "onnx_proba", [ROW, ROW[:5]], "StepError", "model 'onnx_proba' expects rows of 13 float32 values;"),
    (
        "text-xgb",
        "xgb_sklearn",
        [["a"] * 13],
        "StepError",
        "model 'xgb_sklearn' expects rows of 13 float64 values, got text",
    ),
    ("text-torch", "torch_export", [[*ROW[:12], "x"]], "StepError", "model 'torch_export' expects rows of 13 float32"),
    (
        "dict-lgb",
        "lgb_proba",
        [[{"v": 1}] * 13],
        "StepError",
        "model 'lgb_proba' expects rows of 13 float64 values, got dict",
    ),
    ("null-onnx", "onnx", [[None, *ROW[1:]]], "StepError", "model 'onnx' expects rows of 13 float32 values, got null"),
    ("nan-onnx", "onnx", [NAN_ROW], "StepError", "model 'onnx' does not accept NaN: row 0, column 0"),
    (
        "nan-torch",
        "torch_state",
        [ROW, NAN_ROW],
        "StepError",
        "model 'torch_state' does not accept NaN: row 1, column 0",
    ),
    ("inf-xgb", "xgb", [[*ROW[:5], float("inf"), *ROW[6:]]], "StepError", "model 'xgb' does not accept infinite"),
    ("empty", "lgb", [], "StepError", "model 'lgb' expects rows of 13 float64 values, got no rows"),
    *((f"corrupt-{key}", key, [ROW], "GraphError", f"model '{key}': '") for key in CORRUPT),  # "... is not ..."
]
MISSING_OK = [  # NaN is a missing value to the tree models: answered, as the framework answers it
    ("nan-xgb", "xgb_proba", [NAN_ROW, ROW]),
    ("nan-lgb", "lgb", [NAN_ROW]),
    ("null-xgb", "xgb_binary", [[None, *ROW[1:]]]),
]


def bad_requests() -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    made = [({"id": name, "inputs": inputs}, {"model": key}) for name, key, inputs, *_ in BAD]
    return made + [({"id": name, "inputs": inputs}, {"model": key}) for name, key, inputs in MISSING_OK]


def expected_answers(server: Any, folder: Path) -> dict[str, list]:
    """Each good request's outputs, from the frameworks called directly."""
    calls = references(folder)
    expected: dict[str, list] = {}
    for body, headers in good_requests():
        key = headers["model"]
        if key == "vote":  # a majority of the labels of four frameworks; a tie goes to the lowest label
            members = [
                framework_answer(server, calls[m], m, body["inputs"]) for m in ("xgb", "lgb", "onnx", "torch_export")
            ]
            expected[body["id"]] = [int(np.bincount(column, minlength=3).argmax()) for column in zip(*members)]
        else:
            expected[body["id"]] = framework_answer(server, calls[key], key, body["inputs"])
    for name, key, inputs in MISSING_OK:
        expected[name] = framework_answer(
            server, calls[key], key, [[np.nan if v is None else v for v in row] for row in inputs]
        )
    return expected


def check_dead_letters(errors: dict[str, dict[str, str]]) -> None:
    for name, key, _, error_type, words in BAD:
        assert errors[name]["step"] == key, name
        assert errors[name]["error_type"] == error_type, (name, errors[name])
        assert words in errors[name]["error"], (name, errors[name]["error"])
    for key in CORRUPT:
        assert " is not " in errors[f"corrupt-{key}"]["error"]


# -- the mock server ---------------------------------------------------------------------------


def test_every_answer_is_the_frameworks_own_for_a_batch_of_mixed_size_requests(server, models):
    sent = [MockRequest(body, "/", headers) for body, headers in good_requests() + bad_requests()]
    answers, errors = server.test_many(sent)
    got = {answer["id"]: answer["outputs"] for answer in answers}
    assert got == expected_answers(server, models)
    check_dead_letters({error["id"]: error for error in errors})
    assert len(answers) + len(errors) == len(sent)


def test_batching_stacks_rows_into_one_call_and_never_changes_an_answer(server, monkeypatch):
    calls: dict[str, list[int]] = {}
    for key in ("xgb", "lgb_proba", "onnx_proba", "torch_state"):
        step = loaded(server, key)
        monkeypatch.setattr(step, "forward", _recording(step.forward, calls.setdefault(key, [])))
    requests = [(body, headers) for body, headers in good_requests() if headers["model"] in calls]
    batched, _ = server.test_many([MockRequest(body, "/", headers) for body, headers in requests])
    rows = sum(1 if size == "flat" else size for size in SIZES)
    assert calls["xgb"] == calls["lgb_proba"] == [rows]  # eight requests, one call
    assert calls["onnx_proba"] == calls["torch_state"] == [16, 16]  # 16 rows a call, filled up: 15 + 1, then 5
    for sizes in calls.values():
        sizes.clear()
    alone = [server.test("/", body, headers=headers) for body, headers in requests]
    assert {a["id"]: a["outputs"] for a in alone} == {a["id"]: a["outputs"] for a in batched}
    assert calls["xgb"] == [1, 1, 3, 1, 7, 2, 1, 5] and calls["torch_state"] == [16] * 8


def _recording(forward: Callable[[np.ndarray], Any], sizes: list[int]) -> Callable[[np.ndarray], Any]:
    def record(rows: np.ndarray) -> Any:
        sizes.append(len(rows))
        return forward(rows)

    return record


def test_a_model_that_cannot_load_is_not_ready_and_the_others_are(server):
    for key in CORRUPT:
        assert server.test(f"/v2/models/{key}/ready") == {"name": key, "ready": False}
    assert server.test("/v2/models/onnx/ready") == {"name": "onnx", "ready": True}
    assert server.test("/v2/models/onnx")["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 13]}]
    assert server.test("/v2/models/torch_export")["platform"] == "pytorch"


# -- over Kafka --------------------------------------------------------------------------------


@pytest.mark.kafka
def test_over_kafka_every_framework_answers_as_the_framework_and_bad_inputs_are_dead_letters(
    kafka, models, server, monkeypatch, tmp_path
):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", f"fw{time.time_ns()}")
    reference = f"{GRAPHS}:frameworks_graph"
    plan = build_plan(load_graph(reference))
    requests = good_requests() + bad_requests()
    mock = plan.graph.to_mock_server(strict=True)
    answers, errors = mock.test_many([MockRequest(body, "/", headers) for body, headers in requests])
    on_mock = _comparable(answers, errors)
    ensure_topics(kafka, plan)
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", reference, "--bootstrap", kafka], stdout=log, stderr=log
    )
    try:
        sent = [
            Request(dict(body), headers={k: v.encode() for k, v in headers.items()}, format=_format(body))
            for body, headers in requests
        ]
        asyncio.run(produce(kafka, plan.source, sent))
        got, failed = asyncio.run(_read(kafka, plan, {body["id"] for body, _ in requests}))
        assert worker.poll() is None, "the worker died"
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    on_kafka = _comparable(got, failed)
    assert on_kafka == on_mock
    assert {key: value for key, value in on_kafka.items() if isinstance(value, list)} == expected_answers(
        server, models
    )
    check_dead_letters({key: value for key, value in on_kafka.items() if isinstance(value, dict)})


def _format(body: dict[str, Any]) -> str:
    """msgpack for requests holding NaN or infinity (JSON has neither), JSON for the rest."""
    return "msgpack" if "nan" in body["id"] or "inf" in body["id"] else "json"


def _comparable(answers: list[Any], errors: list[dict[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for answer in answers:
        body = decode_response(encode_response(answer))
        seen[body["id"]] = body["outputs"]
    for error in errors:
        seen[error["id"]] = {name: error[name] for name in ("step", "error_type", "error")}
    return seen


async def _read(kafka: str, plan: Any, ids: set[str]) -> tuple[list[Any], list[dict[str, Any]]]:
    answers: list[Any] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    async for topic, record in consume(kafka, [plan.sink, plan.dlq], timeout_s=240, until=lambda: ids <= seen):
        if topic == plan.sink:
            answers.append(record.body)
            seen.add(record.body["id"])
        else:
            fields = {name: value.decode() for name, value in record.headers.items() if value is not None}
            errors.append({name: fields[name] for name in ("id", "step", "error_type", "error")})
            seen.add(fields["id"])
    return answers, errors


def test_the_mixed_example_votes_over_three_frameworks_trained_at_first_use():
    from sklearn.datasets import load_breast_cancer

    from examples.mixed.mixed import DIAGNOSES, build, trained

    features = load_breast_cancer().data[::25]
    server = build().to_mock_server(strict=True)
    classifier = xgboost.XGBClassifier()
    classifier.load_model(trained("xgb"))
    gbm = lightgbm.Booster(model_file=str(trained("lgb")))
    linear = onnxruntime.InferenceSession(str(trained("onnx")), providers=["CPUExecutionProvider"])
    labels = {
        "xgb": classifier.predict(features).tolist(),
        "lgb": (gbm.predict(features) > 0.5).astype(int).tolist(),
        "onnx": linear.run(["label"], {"X": features.astype(np.float32)})[0].tolist(),
    }
    for key, expected in labels.items():
        assert server.test(f"/v2/models/{key}/infer", body={"inputs": features.tolist()})["outputs"] == expected
    voted = [int(np.bincount(column, minlength=2).argmax()) for column in zip(*labels.values())]
    answer = server.test(body={"inputs": features.tolist()})
    assert answer["outputs"] == voted and answer["diagnosis"] == [DIAGNOSES[label] for label in voted]
    assert 0 < sum(voted) < len(voted)  # both diagnoses occur


# -- the batching check, on models made to misbehave ---------------------------------------------------


class _Fake(FrameworkModelServer):
    """A 'framework' computing 2x per row, with a defect chosen by ``defect``."""

    defect = "none"
    max_batch_rows: int | None = 16

    def load_model(self) -> None:
        self.input_dtype, self.row_shape = np.dtype(np.float64), (2,)

    def forward(self, rows: np.ndarray) -> np.ndarray:
        outputs = rows[:, 0] * 2
        if self.defect == "small batches" and len(rows) < 5:  # another kernel below 5 rows
            return outputs + 1e-12
        if self.defect == "neighbours":
            return outputs - rows[:, 0].mean()
        if self.defect == "refuses made-up rows" and (rows < 0).any():
            raise ValueError("negative")
        return outputs


@pytest.mark.parametrize(
    ("defect", "call_rows"),
    [("none", 16), ("small batches", 16), ("neighbours", None), ("refuses made-up rows", None)],
)
def test_calls_of_one_size_or_no_stacking_so_that_no_answer_changes(defect, call_rows):
    graph = Graph("fake")
    graph.to_router("models", default="m").add_model("m", _Fake, defect=defect)
    server = graph.to_mock_server()
    step = server.graph["models"].models["m"][0]
    assert (step.batching, step.call_rows) == (call_rows is not None, call_rows)
    requests = [MockRequest({"id": str(n), "inputs": [[float(n), 0.0]] * (n % 3 + 1)}) for n in range(12)]
    together, _ = server.test_many(requests)
    alone = [server.test("/", request.body) for request in requests]
    assert sorted((a["id"], a["outputs"]) for a in together) == sorted((a["id"], a["outputs"]) for a in alone)


# -- configuration ------------------------------------------------------------------------------


def test_the_registry_names_every_built_in_server_and_graphs_use_the_names(models):
    assert set(BUILTIN_MODELS) == {"sklearn", "xgboost", "lightgbm", "onnx", "pytorch"}
    for name, entry in BUILTIN_MODELS.items():
        cls = import_object(name)
        assert issubclass(cls, ModelServer) and import_object(entry.path) is cls and entry.installed
    assert builtin_model("onnx").extra == "onnx" and builtin_model("nope") is None
    graph = Graph("named")
    graph.to_router("models", default="m").add_model("m", "onnx", model_path=str(models / "lr.onnx"))
    again = Graph.from_yaml(graph.to_yaml())
    assert "class: onnx" in graph.to_yaml()
    answer = again.to_mock_server().test(body={"inputs": [ROW]})
    assert answer["outputs"] == graph.to_mock_server().test(body={"inputs": [ROW]})["outputs"] == [0]
    with pytest.raises(GraphError, match="built-in model server: sklearn, xgboost, lightgbm, onnx, pytorch"):
        Graph("bad").to_router("models").add_model("m", "xgbost")


def test_streamserve_models_lists_each_server_with_its_extra(capsys):
    parser = argparse.ArgumentParser(prog="streamserve")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "--format", "json"])
    assert args.handler(args) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["name"], row["extra"], row["installed"]) for row in listed] == [
        ("sklearn", "", True),
        ("xgboost", "xgboost", True),
        ("lightgbm", "lightgbm", True),
        ("onnx", "onnx", True),
        ("pytorch", "pytorch", True),
    ]
    args = parser.parse_args(["models"])
    args.handler(args)
    text = capsys.readouterr().out
    assert 'pip install "streamserve[onnx]"' in text and "steps.xgboost_server:XGBoostModelServer" in text


def test_bad_options_are_refused_when_the_graph_is_built():
    router = Graph("options").to_router("models")
    with pytest.raises(GraphError, match="method must be one of predict, predict_proba, not 'proba'"):
        router.add_model("a", "xgboost", method="proba")
    with pytest.raises(GraphError, match="max_batch_rows must be a positive whole number, not 0"):
        router.add_model("b", "onnx", max_batch_rows=0)
    with pytest.raises(GraphError, match="method='predict_proba' needs outputs='logits' or 'probabilities'"):
        router.add_model("c", PyTorchModelServer, method="predict_proba")


def test_a_fixed_batch_dimension_gets_calls_of_that_size_one_request_at_a_time(models, tmp_path):
    net = WineNet()
    net.load_state_dict(torch.load(models / "net.pth", weights_only=True))
    net.eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 13),)), tmp_path / "static.pt2")  # batch of 1
    graph = Graph("static")
    graph.to_router("models", default="m").add_model("m", "pytorch", model_path=str(tmp_path / "static.pt2"))
    server = graph.to_mock_server()
    step = loaded(server, "m")
    assert (step.fixed_rows, step.call_rows, step.batching, step.row_shape) == (1, 1, False, (13,))
    rows = wine()[0][:3]
    with torch.inference_mode():
        expected = [net(torch.tensor(row[None], dtype=torch.float32))[0].tolist() for row in rows]
    assert server.test(body={"inputs": rows.tolist()})["outputs"] == expected


def test_load_problems_name_the_model_and_what_it_needed(models):
    cases = [
        (
            ONNXModelServer,
            {"model_path": models / "lr.onnx", "providers": ["NoSuchExecutionProvider"]},
            "onnxruntime .* has no NoSuchExecutionProvider \\(it has .*CPUExecutionProvider",
        ),
        (XGBoostModelServer, {"model_path": models / "lr.onnx"}, "is not a model saved with joblib"),
        (XGBoostModelServer, {"model_path": models / "lgb.joblib"}, "got a LGBMClassifier, not an XGBoost Booster"),
        (XGBoostModelServer, {"model_path": models / "nowhere.json"}, "model_path .*nowhere.json' does not exist"),
        (XGBoostModelServer, {"model_path": models / "xgb.json", "method": "predict_proba"}, None),
        (
            ONNXModelServer,
            {"model_path": models / "lr.onnx", "output": "nope"},
            "no output 'nope'; the model has label, probabilities",
        ),
        (
            PyTorchModelServer,
            {"model_path": models / "net.pth"},
            "is not a TorchScript module \\(a state dict needs model_class",
        ),
        (
            PyTorchModelServer,
            {"model_path": models / "net.pth", "model_class": "framework_graphs:WineNet", "model_kwargs": {"bad": 1}},
            "does not fit WineNet",
        ),
    ]
    if not torch.cuda.is_available():
        cases.append(
            (PyTorchModelServer, {"model_path": models / "net.pt", "device": "cuda"}, "torch sees no CUDA device")
        )
    for cls, options, message in cases:
        step = cls(name="m", **options)
        step.setup()
        if message is None:
            assert step.load_error is None and step.ready
            continue
        assert step.load_error is not None and not step.ready
        assert str(step.load_error).startswith("model 'm': ") and _search(message, str(step.load_error)), (
            step.load_error
        )


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None
