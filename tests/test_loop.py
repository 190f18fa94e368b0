"""The delivery loop without a broker: over the in-memory transport, through hostile input,
revocation, failed deliveries, joins, oversized and unencodable outputs, and transactions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from helpers import Constant, Doubler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import hostile_headers, hostile_keys, hostile_values

from pipeline import Graph
from pipeline.codec import decode_response, encode_response
from pipeline.mock import MockRequest, MockServer
from pipeline.plan import Plan, build_plan
from pipeline.runtime.deadletter import ERROR_HEADERS
from pipeline.runtime.loop import AgentLoop
from pipeline.runtime.memory import MemoryBroker, MemoryRecord
from pipeline.runtime.memory_transport import MemoryTransport
from pipeline.runtime.sensors import Tally
from pipeline.runtime.settings import AgentSettings
from steps import Emit, Step, VotingEnsemble

EVERY_BATCH = AgentSettings(commit_interval_ms=0, max_batch_size=7, instance="test")


class Deployment:
    """Every agent of a graph as a loop over one memory broker (a member of its group each)."""

    def __init__(self, graph: Graph, *, partitions: int = 4, settings: AgentSettings = EVERY_BATCH) -> None:
        self.plan: Plan = build_plan(graph)
        self.broker = MemoryBroker(partitions=partitions)
        self.tally = Tally()
        self.settings = settings
        self.loops: dict[str, AgentLoop] = {}
        for agent in self.plan.agents:
            agent.step.setup()
            self.loops[agent.name] = self.member(agent.name)

    def member(self, name: str) -> AgentLoop:
        """A new group member running agent ``name``."""
        return AgentLoop(
            self.plan, self.plan.agent(name), MemoryTransport(self.broker), settings=self.settings, sensors=self.tally
        )

    async def start(self) -> None:
        for loop in self.loops.values():
            await loop.start()

    def produce(self, value: bytes | None, *, key: bytes | None = None, headers: Any = (), partition: int = 0) -> None:
        self.broker.append(self.plan.source, partition, key, value, headers)

    async def drain(self, loops: list[AgentLoop] | None = None, *, rounds: int = 100) -> None:
        """Poll ``loops`` (default: all) until none has anything left to read."""
        for _ in range(rounds):
            busy = [loop for loop in loops or list(self.loops.values()) if loop.transport.pending() or loop._rewind_due]
            if not busy:
                return
            for loop in busy:
                await loop.poll_once(0)
        raise AssertionError("the loops never ran out of work")

    def sink(self) -> list[MemoryRecord]:
        return list(self.broker.records(self.plan.sink))

    def dead(self) -> list[MemoryRecord]:
        return list(self.broker.records(self.plan.dlq))


async def fail_one_delivery(deployment: Deployment) -> None:
    """Start; let the router route everything; then drain with the next delivery failing."""
    await deployment.start()
    await deployment.drain([deployment.loops["models"]])
    deployment.broker.fail_deliveries = 1
    await deployment.drain()


def doubling_graph(name: str = "loop") -> Graph:
    graph = Graph(name)
    graph.to_router("models", default="double").add_model("double", Doubler)
    return graph


def request(row: float, **extra: Any) -> bytes:
    return json.dumps({"inputs": [[row]], **extra}).encode()


def headers_of(record: MemoryRecord) -> dict[str, bytes | None]:
    return dict(record.headers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(hostile_values(), hostile_keys(), hostile_headers()), min_size=1, max_size=12))
def test_every_hostile_record_is_answered_or_dead_lettered_with_its_own_bytes(records):
    deployment = Deployment(doubling_graph(), partitions=1)
    good = [request(float(n), id=f"good-{n}") for n in range(5)]
    produced = [(value, key, headers) for value, key, headers in records] + [(value, None, ()) for value in good]
    for value, key, headers in produced:
        deployment.produce(value, key=key, headers=headers)

    async def run() -> None:
        await deployment.start()
        await deployment.drain()

    asyncio.run(run())
    answers, dead = deployment.sink(), deployment.dead()
    assert len(answers) + len(dead) == len(produced)  # each record once: an answer or a dead letter
    for letter in dead:
        fields = headers_of(letter)
        value, key, headers = produced[int(fields["offset"])]
        assert (letter.value, letter.key) == (value or b"", key)
        assert fields["error"] and fields["step"] and fields["source_topic"] == deployment.plan.source.encode()
        original = [(name, header) for name, header in headers if name not in ERROR_HEADERS]
        assert [pair for pair in letter.headers if pair[0] not in ERROR_HEADERS][: len(original)] == original
    answered = {decode_response(record.value)["id"] for record in answers}
    assert {f"good-{n}" for n in range(5)} <= answered


def test_text_that_utf8_cannot_encode_dead_letters_its_request_and_the_agent_goes_on():
    """JSON escapes decode to lone surrogates: an id that Kafka's id header cannot carry, a
    field msgpack cannot pack. Each is that request's dead letter; the batch around it is answered."""
    deployment = Deployment(doubling_graph(), partitions=1)
    bad = [b'{"id": "\\ud800", "inputs": [[1.0]]}', b'{"inputs": [[1.0]], "note": "\\udfff"}']
    for value in [request(1.0, id="before"), *bad, request(2.0, id="after")]:
        deployment.produce(value)

    async def run() -> None:
        await deployment.start()
        await deployment.drain()

    asyncio.run(run())
    assert sorted(decode_response(record.value)["id"] for record in deployment.sink()) == ["after", "before"]
    assert sorted(letter.value for letter in deployment.dead()) == sorted(bad)


def test_a_revoked_partition_is_committed_then_continued_by_its_new_owner():
    deployment = Deployment(doubling_graph("revoke"), partitions=4)
    for n in range(40):
        deployment.produce(request(n, id=f"r{n}"), key=f"k{n}".encode(), partition=n % 4)

    async def run() -> None:
        await deployment.start()
        first = deployment.loops["double"]
        await deployment.drain([deployment.loops["models"]])
        await first.poll_once(0)  # one batch, then a second member joins the group
        second = deployment.member("double")
        await second.start()
        assert first.transport.owned and second.transport.owned
        assert not first.transport.owned & second.transport.owned
        await deployment.drain([first, second])

    asyncio.run(run())
    ids = [decode_response(record.value)["id"] for record in deployment.sink()]
    assert sorted(ids) == sorted(f"r{n}" for n in range(40))  # none lost, none twice
    committed = deployment.broker.committed["revoke.double"]
    assert committed == deployment.broker.end_offsets("revoke.double")


def test_a_failed_delivery_is_read_again_from_the_last_commit():
    deployment = Deployment(doubling_graph("fails"), partitions=1)
    for n in range(20):
        deployment.produce(request(n, id=f"f{n}"))

    asyncio.run(fail_one_delivery(deployment))
    assert [str(error) for _, error in deployment.tally.failures] == [
        "delivery to 'fails.predictions' failed (injected)"
    ]
    ids = [decode_response(record.value)["id"] for record in deployment.sink()]
    assert set(ids) == {f"f{n}" for n in range(20)} and not deployment.dead()


def ensemble_graph(name: str) -> Graph:
    graph = Graph(name)
    router = graph.to_router("models", default="mean")
    router.add_model("a", Constant, value=1.0).add_model("b", Constant, value=3.0)
    router.add_model("mean", VotingEnsemble(["a", "b"], vote="regression"))
    return graph


def test_a_join_never_commits_past_an_open_join_and_rejoins_after_a_rewind():
    deployment = Deployment(ensemble_graph("joins"), partitions=1)
    for n in range(10):
        deployment.produce(request(n, id=f"j{n}"))
    loops = deployment.loops

    async def run() -> None:
        await deployment.start()
        await deployment.drain([loops["models"], loops["mean"], loops["a"], loops["mean.join"]])
        join = loops["mean.join"]
        assert len(list(join.agent.step.held())) == 10  # every join waits for member b
        assert deployment.broker.committed["joins.mean.join"] == {("joins.mean.join", 0): 0}
        deployment.broker.fail_deliveries = 1  # a rewind of the join agent: it forgets its open joins
        join._rewind_due = True
        await deployment.drain()

    asyncio.run(run())
    answers = [decode_response(record.value) for record in deployment.sink()]
    assert sorted(a["id"] for a in answers) == sorted(f"j{n}" for n in range(10))
    assert {a["outputs"][0] for a in answers} == {2.0}


class Opaque:
    """Nothing a wire can carry."""


def test_outputs_that_cannot_be_sent_or_steps_that_break_the_contract_are_dead_lettered():
    graph = Graph("contract")
    graph.to("shape", lambda body: {"obj": Opaque()} if body["inputs"][0][0] == 1 else body).to("next", lambda b: b)
    deployment = Deployment(graph, partitions=1)
    for n in range(3):
        deployment.produce(request(n, id=f"c{n}"))

    class Garbage(Step):
        def process(self, events: list) -> list:
            return [42]

    broken = Graph("garbage")
    broken.to("g", Garbage())
    other = Deployment(broken, partitions=1)
    other.produce(request(1, id="g1"))

    async def run() -> None:
        await deployment.start()
        await deployment.drain()
        await other.start()
        await other.drain()

    asyncio.run(run())
    assert sorted(decode_response(r.value)["id"] for r in deployment.sink()) == ["c0", "c2"]
    [letter] = deployment.dead()
    assert b"cannot be sent" in headers_of(letter)["error"] and letter.value == request(1, id="c1")
    [garbage] = other.dead()
    assert b"not an Emit or a Fail" in headers_of(garbage)["error"]


class Bloat(Doubler):
    """Answers rows starting with 5 with a 3 kB string."""

    def predict(self, body: dict[str, Any]) -> list:
        return ["x" * 3000 if row[0] == 5 else row[0] * 2 for row in body["inputs"]]


def test_a_record_over_the_topic_limit_is_dead_lettered_and_its_batch_mates_sent():
    graph = Graph("sizes")
    graph.to_router("models", default="bloat").add_model("bloat", Bloat)
    deployment = Deployment(graph, partitions=1)
    deployment.broker.max_bytes = 2_000
    for n in range(8):
        deployment.produce(request(n, id=f"s{n}"))

    async def run() -> None:
        await deployment.start()
        await deployment.drain()

    asyncio.run(run())
    assert sorted(decode_response(r.value)["id"] for r in deployment.sink()) == [f"s{n}" for n in range(8) if n != 5]
    [letter] = deployment.dead()
    assert headers_of(letter)["error_type"] == b"MessageSizeTooLargeError"
    assert letter.value == request(5, id="s5")


def test_exactly_once_shows_nothing_of_an_aborted_transaction_and_answers_once():
    graph = doubling_graph("eos")
    graph.guarantee = "exactly_once"
    deployment = Deployment(graph, partitions=1)
    for n in range(12):
        deployment.produce(request(n, id=f"e{n}"))

    asyncio.run(fail_one_delivery(deployment))
    ids = [decode_response(record.value)["id"] for record in deployment.sink()]
    assert sorted(ids) == sorted(f"e{n}" for n in range(12))


def test_a_batch_handed_to_a_step_is_what_arrived_across_partitions():
    batches: list[int] = []

    class Counting(Step):
        def process(self, events: list) -> list:
            batches.append(len(events))
            return [Emit(event) for event in events]

    graph = Graph("batches")
    graph.to("count", Counting())
    deployment = Deployment(graph, partitions=4)
    for n in range(20):
        deployment.produce(encode_response({"n": n}), partition=n % 4)

    async def run() -> None:
        await deployment.start()
        await deployment.drain()

    asyncio.run(run())
    assert batches == [7, 7, 6] and len(deployment.sink()) == 20


def test_a_join_whose_answers_were_not_delivered_joins_again():
    deployment = Deployment(ensemble_graph("rejoin"), partitions=1)
    for n in range(10):
        deployment.produce(request(n, id=f"j{n}"))
    loops = deployment.loops

    async def run() -> None:
        await deployment.start()
        await deployment.drain([loops["models"], loops["mean"], loops["a"], loops["b"]])
        deployment.broker.fail_deliveries = 1  # the join closes every event, and its answers are lost
        await deployment.drain()

    asyncio.run(run())
    answers = [decode_response(record.value) for record in deployment.sink()]
    assert sorted(a["id"] for a in answers) == sorted(f"j{n}" for n in range(10))


def tag_customer(event: Any) -> Any:
    """A full-event step that sets what a Kafka record cannot carry as it is: text."""
    row = event.body["inputs"][0][0]
    if row == 1:
        event.key = "cust-42"
    elif row == 2:
        event.headers["trace"] = "text"
    return event


def test_a_key_or_header_set_to_text_dead_letters_that_event_only_on_kafka_and_the_mock():
    graph = Graph("textkey")
    graph.to("tag", tag_customer, full_event=True).to("next", lambda body: body)
    deployment = Deployment(graph, partitions=4)  # several partitions: the key is hashed to pick one
    for n in range(6):
        deployment.produce(request(n, id=f"t{n}"))

    async def run() -> None:
        await deployment.start()
        await deployment.drain()

    asyncio.run(run())
    assert sorted(decode_response(r.value)["id"] for r in deployment.sink()) == ["t0", "t3", "t4", "t5"]
    letters = {headers_of(letter)["id"]: letter for letter in deployment.dead()}
    assert set(letters) == {b"t1", b"t2"}
    assert b"key must be bytes or None, not str" in headers_of(letters[b"t1"])["error"]
    assert b"header 'trace' must be bytes or None, not str" in headers_of(letters[b"t2"])["error"]
    assert letters[b"t1"].value == request(1, id="t1") and headers_of(letters[b"t1"])["step"] == b"tag"
    for loop in deployment.loops.values():  # everything read is committed: nothing is read again
        ends = deployment.broker.end_offsets(loop.agent.input)
        assert deployment.broker.committed[loop.group] == {tp: end for tp, end in ends.items() if end}

    for strict in (False, True):  # the mock server answers as Kafka does
        answers, errors = MockServer(graph, strict=strict).run([MockRequest({"inputs": [[n]]}) for n in range(4)])
        assert [answer["inputs"] for answer in answers] == [[[0]], [[3]]]
        assert len(errors) == 2 and all("must be bytes or None, not str" in e["error"] for e in errors)


class BreaksOnce(MemoryTransport):
    """A memory transport whose first record batch fails with an error the loop does not expect."""

    broken = False

    async def send_batch(self, batch: Any, topic: str, partition: int) -> Any:
        if not BreaksOnce.broken:
            BreaksOnce.broken = True
            raise RuntimeError("a fault of ours (injected)")
        return await super().send_batch(batch, topic, partition)


def test_an_agent_that_stops_on_an_unexpected_error_commits_nothing_it_did_not_deliver():
    graph = Graph("unexpected")
    graph.to("echo", lambda body: body)
    deployment = Deployment(graph, partitions=1)
    for n in range(10):
        deployment.produce(request(n, id=f"u{n}"))
    agent = deployment.plan.agent("echo")
    broken = AgentLoop(deployment.plan, agent, BreaksOnce(deployment.broker), settings=EVERY_BATCH)

    async def run() -> None:
        try:
            await broken.run(asyncio.Event())
        except RuntimeError:
            pass
        else:
            raise AssertionError("the fault did not stop the agent")
        assert not deployment.broker.committed.get("unexpected.echo")  # the failed batch is not committed
        again = deployment.member("echo")
        await again.start()
        await deployment.drain([again])

    asyncio.run(run())
    ids = [decode_response(record.value)["id"] for record in deployment.sink()]
    assert sorted(ids) == sorted(f"u{n}" for n in range(10))  # each once: none lost


def picky(body: dict[str, Any]) -> dict[str, Any]:
    if len(body["inputs"][0]) > 1:
        raise ValueError(f"cannot use {body!r}")  # the whole request, quoted in the error
    return body


def test_a_dead_letter_over_the_topic_limit_goes_without_its_value_and_a_capped_error():
    graph = Graph("bigletter")
    graph.to("picky", picky)
    deployment = Deployment(graph, partitions=1)
    deployment.broker.max_bytes = 2_000
    big = json.dumps({"id": "big", "inputs": [[0] + [1] * 1_500]}).encode()
    deployment.produce(big)
    deployment.produce(request(1, id="small"))

    async def run() -> None:
        await deployment.start()
        await deployment.drain()

    asyncio.run(asyncio.wait_for(run(), 20))  # a letter refused for good: read again and again, never done
    assert [decode_response(r.value)["id"] for r in deployment.sink()] == ["small"]
    [letter] = deployment.dead()
    fields = headers_of(letter)
    assert letter.value == b"" and fields["value_dropped"] == str(len(big)).encode()
    assert fields["error_type"] == b"ValueError" and fields["id"] == b"big"
    assert len(fields["error"]) < 1_100 and fields["error"].endswith(b" bytes]")
    assert deployment.broker.committed["bigletter.picky"] == {("bigletter.requests", 0): 2}


class ExpiresBadly(Step):
    """Emits every event; its expiry check is broken, so every batch fails after the step."""

    def process(self, events: list) -> list:
        return [Emit(event) for event in events]

    def expire(self, now: float) -> list:
        raise RuntimeError("expiry broke")


def test_a_batch_failed_between_steps_is_dead_lettered_as_its_requests_entered():
    graph = Graph("between")
    graph.to("first", lambda body: body).to("second", ExpiresBadly())
    deployment = Deployment(graph, partitions=1)
    for n in range(3):
        deployment.produce(request(n, id=f"b{n}"), key=b"k%d" % n, headers=[("trace", b"t%d" % n)])
    second = deployment.plan.agent("second").input
    deployment.broker.append(second, 0, None, b"\x93not an envelope", [])

    async def run() -> None:
        await deployment.start()
        await deployment.drain()

    asyncio.run(run())
    letters = deployment.dead()
    requests = {headers_of(letter).get("id"): letter for letter in letters if headers_of(letter)["partition"] != b"-1"}
    for n in range(3):  # replayable: the request as it entered, where it entered
        letter = requests[b"b%d" % n]
        assert (letter.value, letter.key, headers_of(letter)["trace"]) == (
            request(n, id=f"b{n}"),
            b"k%d" % n,
            b"t%d" % n,
        )
        assert headers_of(letter)["offset"] == str(n).encode() and headers_of(letter)["failed_topic"] == second.encode()
    [unknown] = [letter for letter in letters if headers_of(letter)["partition"] == b"-1"]  # replay skips it
    assert headers_of(unknown)["error_type"] == b"CodecError"


def test_records_of_a_partition_revoked_while_they_were_read_are_never_committed():
    graph = Graph("stale")
    graph.to("echo", lambda body: body)
    deployment = Deployment(graph, partitions=4)
    for n in range(32):
        deployment.produce(request(n, id=f"s{n}"), partition=n % 4)

    async def run() -> None:
        first = deployment.loops["echo"]
        await first.start()
        records = await first.transport.poll(7, 0)  # read, and then (as while Kafka isolates a record) ...
        second = deployment.member("echo")
        await second.start()  # ... a rebalance moves partitions 1 and 3 to a second member
        revoked = set(records) - set(first.transport.assignment())
        assert revoked
        await deployment.drain([second])
        await first.handle(records)  # the stale batch: answered again, at least once, but not committed
        await deployment.drain([first, second])

    asyncio.run(run())
    assert deployment.broker.committed["stale.echo"] == deployment.broker.end_offsets("stale.requests")
    assert {decode_response(r.value)["id"] for r in deployment.sink()} == {f"s{n}" for n in range(32)}
