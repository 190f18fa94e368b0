"""The command line as Kafka users expect it: produce checks its whole input first and names bad
lines; consume shows where each record is; run starts quietly on the port asked for; inspect
follows one request; Kafka's own console tools come from the same cache; every option is explained."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.cli import build_parser
from pipeline.kafka_dist import MavenProgress

HELPERS = Path(__file__).parent / "helpers.py"


def streamserve(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_option_and_argument_has_help_text() -> None:
    missing = []
    for command, sub in _subcommands(build_parser()).items():
        missing += [f"{command} {a.dest}" for a in sub._actions if a.dest != "help" and not (a.help or "").strip()]
    assert missing == []


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_produce_names_every_bad_line_and_sends_nothing(tmp_path: Path) -> None:
    lines = [
        '{"inputs": [[1, 2]], "user": "u1"}',
        '{"inputs": [[1, 2]',
        "",
        "[1, 2, 3]",
        '{"inputs": [[3, 4]]}',
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # A broker nobody listens on: the input is refused before any connection is tried.
    done = streamserve(
        "produce", "--topic", "t", "--file", str(path), "--key-field", "user", "--bootstrap", "127.0.0.1:9"
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "streamserve: line 2: not valid JSON: Expecting ',' delimiter (column 19)",
        'line 4: expected a JSON object (a V2 request such as {"inputs": [[1, 2]]}), got an array',
        "line 5: no field 'user' for the key (--key-field)",
        "3 bad line(s); nothing was sent",
    ]
    bad_header = streamserve("produce", "--topic", "t", "--header", "novalue", stdin="{}\n")
    assert bad_header.returncode == 2 and "expected NAME=VALUE, got 'novalue'" in bad_header.stderr
    assert "Traceback" not in done.stderr + bad_header.stderr


@pytest.mark.kafka
def test_a_bad_last_line_leaves_the_topic_untouched(kafka: str, tmp_path: Path) -> None:
    topic = f"cli-untouched-{time.time_ns()}"
    path = tmp_path / "requests.jsonl"
    path.write_text('{"inputs": [[1]]}\n' * 100 + "not json\n")
    done = streamserve("produce", "--topic", topic, "--file", str(path), "--bootstrap", kafka)
    assert done.returncode == 2 and done.stderr.startswith("streamserve: line 101: not valid JSON")
    assert topic not in asyncio.run(_topics(kafka))  # not even created by a first send


async def _topics(kafka: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.kafka
def test_keys_headers_msgpack_and_where_each_record_is(kafka: str) -> None:
    topic = f"cli-records-{time.time_ns()}"
    lines = "".join(json.dumps({"id": f"r{n}", "user": f"u{n % 2}", "inputs": [[n]]}) + "\n" for n in range(4))
    access = ["--topic", topic, "--bootstrap", kafka]
    produced = streamserve(
        "produce", *access, "--key-field", "user", "--header", "trace=abc", "--format", "msgpack", stdin=lines
    )
    assert produced.returncode == 0 and "produced 4 requests" in produced.stderr, produced.stderr
    keyed = streamserve("produce", *access, "--key", "fixed", stdin='{"id": "k1", "inputs": [[9]]}\n')
    assert keyed.returncode == 0, keyed.stderr

    shown = streamserve("consume", *access)
    assert shown.returncode == 0 and "read 5 records" in shown.stderr, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {r["body"]["id"]: r["key"] for r in records} == {
        "r0": "u0",
        "r1": "u1",
        "r2": "u0",
        "r3": "u1",
        "k1": "fixed",
    }
    for record in records:
        assert record["topic"] == topic and record["partition"] == 0 and record["timestamp"] > 1e12
        assert record["headers"]["id"] == record["body"]["id"]
    assert sorted(r["offset"] for r in records) == [0, 1, 2, 3, 4]
    assert {r["headers"].get("trace") for r in records} == {"abc", None}
    text = streamserve("consume", *access, "--format", "text", "--limit", "1")
    assert text.stdout.startswith(f"{topic}[0]@0  ") and "key=u0" in text.stdout

    assert streamserve("consume", *access, "--from-end").stdout == ""  # nothing new: stops at once
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "consume",
            *access,
            "--from-end",
            "--follow",
            "--timeout",
            "20",
            "--limit",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # the follower has reached the end
    assert streamserve("produce", *access, stdin='{"id": "late", "inputs": [[1]]}\n').returncode == 0
    out, err = follower.communicate(timeout=30)
    assert [json.loads(line)["body"]["id"] for line in out.splitlines()] == ["late"], err


@pytest.mark.kafka
def test_a_healthy_start_is_quiet_and_inspect_follows_a_request(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", f"cli{time.time_ns()}")
    reference, port, metrics = f"{HELPERS}:fault_graph", free_port(), free_port()
    log = tmp_path / "run.log"
    with open(log, "w") as output:
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "run",
                reference,
                "--port",
                str(port),
                "--metrics-port",
                str(metrics),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**_without_cluster(os.environ), "PYTHONUNBUFFERED": "1"},  # the embedded broker, on --port
        )
    try:
        _wait_ready(metrics, run, log)
        bootstrap = f"127.0.0.1:{port}"
        assert f"embedded Kafka at {bootstrap}" in log.read_text()
        requests = '{"id": "follow-me", "inputs": [[21]]}\n'
        assert streamserve("produce", reference, "--bootstrap", bootstrap, stdin=requests).returncode == 0
        bad = streamserve("produce", reference, "--bootstrap", bootstrap, "--model", "nope", stdin='{"id": "lost"}\n')
        assert bad.returncode == 0
        answers = streamserve(
            "consume", reference, "--bootstrap", bootstrap, "--follow", "--limit", "1", "--timeout", "60"
        )
        assert json.loads(answers.stdout)["body"]["outputs"] == [42]

        shown = streamserve("inspect", reference, "follow-me", "--bootstrap", bootstrap)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith("request 'follow-me' (uid ") and ": answered, entered " in lines[0]
        name = lines[1].split()[2].split(".")[0]
        assert [line.split()[3:5] for line in lines[1:]] == [
            ["request", "->"],
            ["->", "double"],
            ["answer", '{"id":'],
        ], shown.stdout
        assert lines[1].split()[2].startswith(f"{name}.requests[") and lines[2].split()[2].startswith(f"{name}.double[")
        letters = streamserve(
            "consume", reference, "--dlq", "--bootstrap", bootstrap, "--follow", "--limit", "1", "--timeout", "60"
        )
        assert json.loads(letters.stdout)["headers"]["id"] == "lost"
        lost = streamserve("inspect", reference, "lost", "--bootstrap", bootstrap, "--format", "json")
        (journey,) = json.loads(lost.stdout)
        assert journey["outcome"] == "dead-lettered"
        assert journey["hops"][-1]["detail"]["error_type"] == "RoutingError"
        assert "unknown model 'nope'" in journey["hops"][-1]["detail"]["error"]
        nobody = streamserve("inspect", reference, "nobody", "--bootstrap", bootstrap)
        assert nobody.returncode == 1 and "no request with id 'nobody'" in nobody.stdout
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(60)
    text = log.read_text()
    assert code == 0, text
    noisy = [line for line in text.splitlines() if " ERROR " in line or " WARNING " in line or "Traceback" in line]
    assert noisy == [], text


def _without_cluster(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "STREAMSERVE_KAFKA_CONFIG")}


def _wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.2)


@pytest.mark.kafka
def test_kafkas_own_console_tools_from_the_same_cache(kafka: str, tmp_path: Path) -> None:
    done = streamserve("broker", "--tools", str(tmp_path / "bin"), timeout=600)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder == tmp_path / "bin" and f'export PATH="{folder}:$PATH"' in done.stderr
    topic = f"tools-{time.time_ns()}"
    created = subprocess.run(
        [
            str(folder / "kafka-topics.sh"),
            "--bootstrap-server",
            kafka,
            "--create",
            "--topic",
            topic,
            "--partitions",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    described = streamserve("consume", "--topic", topic, "--bootstrap", kafka)
    assert described.returncode == 0 and "read 0 records" in described.stderr, described.stderr


def test_maven_downloads_show_as_progress(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    progress = MavenProgress("Kafka jars", stream=stream, interval_s=0)
    with caplog.at_level(logging.INFO, logger="pipeline.kafka_dist"):
        progress.line("[INFO] Downloading from central: https://repo/x.pom")
        progress.line("[INFO] Downloaded from central: https://repo/kafka_2.13-4.1.1.jar (6.6 MB at 12 MB/s)")
        progress.line("Downloaded from central: https://repo/a.pom (1.5 kB at 20 kB/s)")
        progress.done()
    assert progress.files == 2 and round(progress.bytes) == 6_601_500
    assert caplog.messages[-1] == "downloading the Kafka jars: 2 files, 6.6 MB (done)"


def test_the_readme_graph_runs_as_copied(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## A graph", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    script = tmp_path / "graph.py"
    script.write_text(
        code + "\nprint(repr(server.test('/v2/models/lr/infer', body={'inputs': [[5.1, 3.5, 1.4, 0.2]]})))\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "'outputs': [0]" in done.stdout and "'served_by': 'streamserve'" in done.stdout
