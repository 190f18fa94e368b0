"""MLServer 1.7 in Kafka mode as a benchmark target, in one of the configurations its docs describe.

MLServer reads V2 requests (``{"inputs": [{"name", "shape", "datatype", "data"}]}``, model named by
the ``mlserver-model`` header) from its input topic and writes answers to its output topic. Its
consumer has no group and starts at the end of the topic, so it is warmed up until it answers.

Answers are matched to requests by the Kafka key: MLServer sets an answer's key (and id) to its
request's key, and writes only CloudEvents headers (``Ce-Id``...), no ``id`` header.

Requests it loses: its Kafka server starts one task per consumed record, with no bound, and each
task awaits ``send_and_wait`` for its answer; when a burst outruns the model, the tasks pile up on
the producer's buffer, and an answer that cannot be queued within aiokafka's ``request_timeout_ms``
(40 s) fails with KafkaTimeoutError, which MLServer logs ("ERROR 500") and drops: no backpressure,
no retry. That is the "18,333 of 30,000 answered" of the 2026-11-25 report (adaptive batching
with the default pool of 1 worker, 20,000 requests open loop: 12,203 of them answered when rerun
here, KafkaTimeoutError for the rest; all 10,000 at 1,000/s answered). :meth:`MLServer.dropped`
counts those errors in its log.

Configurations (docs.seldon.ai/mlserver, user-guide/parallel-inference and adaptive-batching):
``parallel_workers`` 0 runs inference in the main process, which the docs advise for lightweight
models (the IPC to a worker pool costs more than such a model); N > 0 a pool of N processes
(default 1). Adaptive batching (``max_batch_size`` > 1 requests, ``max_batch_time`` seconds) is off
by default, its values "found through experimentation": peer.py tries several.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import RESULTS, Target, create, fresh_name, iris_requests, warm_up
from cpu import descendants
from processes import Processes

from pipeline.client import Request

PACKAGES = ["mlserver==1.7.*", "mlserver-sklearn==1.7.*", "uvloop<0.22"]
# uvloop 0.22 breaks MLServer 1.7's parallel inference workers at start (SeldonIO/MLServer#2286).
MODEL = "iris-lr"


@dataclass(frozen=True)
class Config:
    """One MLServer configuration: the server's ``parallel_workers`` (None: its default, 1) and the
    model's adaptive batching (``max_batch_size`` 0: off)."""

    parallel_workers: int | None = None
    max_batch_size: int = 0
    max_batch_time: float = 0.0

    @property
    def name(self) -> str:
        if self == Config():
            return "defaults"
        parts = [] if self.parallel_workers is None else [f"parallel_workers={self.parallel_workers}"]
        if self.max_batch_size > 1:
            parts.append(f"batching {self.max_batch_size} / {self.max_batch_time * 1000:g} ms")
        return ", ".join(parts)


# The sweep: the default, inference in the main process (the docs' advice for a light model), one
# worker per core, and adaptive batching at a small and a large batch bound, the large one also with
# the default pool (the 2026-11-25 report's configuration).
CONFIGS = [
    Config(),
    Config(parallel_workers=0),
    Config(parallel_workers=2),
    Config(parallel_workers=0, max_batch_size=32, max_batch_time=0.002),
    Config(parallel_workers=0, max_batch_size=500, max_batch_time=0.005),
    Config(parallel_workers=2, max_batch_size=500, max_batch_time=0.005),
    Config(max_batch_size=500, max_batch_time=0.005),
]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def version(bin_dir: Path) -> str:
    """The installed MLServer's version."""
    command = [str(bin_dir / "python"), "-c", "import mlserver; print(mlserver.__version__)"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


class MLServer(Target):
    """``mlserver start`` on a folder holding settings.json and the model's model-settings.json."""

    entry = "mlserver"
    dlq = None  # MLServer only logs failures

    def __init__(self, bootstrap: str, bin_dir: Path, model_path: str, config: Config, mlserver_version: str) -> None:
        self.bootstrap, self.model_path, self.config = bootstrap, model_path, config
        self.name = fresh_name("mlserver")
        self.source, self.sink = f"{self.name}.input", f"{self.name}.output"
        self.folder = RESULTS / "logs" / self.name
        self.label = f"MLServer {mlserver_version} Kafka mode, {config.name}"
        self.workers = Processes(lambda *_: [str(bin_dir / "mlserver"), "start", "."], self.folder, cwd=self.folder)

    def pids(self) -> dict[str, int]:
        """The server and its inference pool's processes."""
        found = {}
        for name, pid in super().pids().items():
            for index, member in enumerate(descendants(pid)):
                found[name if index == 0 else f"{name}.pool{index}"] = member
        return found

    def dropped(self) -> int:
        """Answers MLServer failed to produce and dropped so far (KafkaTimeoutError in its log)."""
        log = self.folder / f"{self.entry}.0.log"
        if not log.is_file():
            return 0
        return sum(1 for line in log.open(errors="replace") if "ERROR 500 - KafkaTimeoutError" in line)

    def __enter__(self) -> MLServer:
        create(self.bootstrap, [self.source, self.sink])
        settings: dict[str, Any] = {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "kafka_enabled": True,
            "kafka_servers": self.bootstrap,
            "kafka_topic_input": self.source,
            "kafka_topic_output": self.sink,
        }
        if self.config.parallel_workers is not None:
            settings["parallel_workers"] = self.config.parallel_workers
        model: dict[str, Any] = {
            "name": MODEL,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": self.model_path, "version": "v1"},
        }
        if self.config.max_batch_size > 1:
            model.update(max_batch_size=self.config.max_batch_size, max_batch_time=self.config.max_batch_time)
        (self.folder / MODEL).mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(json.dumps(settings, indent=2))
        (self.folder / MODEL / "model-settings.json").write_text(json.dumps(model, indent=2))
        self.workers.start(self.entry)
        return self


def by_key(record: Any) -> str:
    """The request an MLServer answer is for: its Kafka key (see the module's docstring)."""
    return (record.key or b"").decode(errors="replace")


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
            warm_up(target, v2_requests(iris_requests(1, seed=int(time.time()))), timeout_s=4, answer_id=by_key)
            return
        except RuntimeError:
            if time.monotonic() > deadline or target.exited():
                raise
