"""Request/reply over Kafka for a deployed graph: send requests to its input topic and get each
one's answer (or dead letter) back by request id, from any thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.client import Request, decoded_body
from pipeline.errors import RequestFailed
from pipeline.kafka_access import start_client
from pipeline.kafka_config import KafkaConfig


@dataclass(frozen=True)
class Reply:
    """What came back for a request: its answer, or the dead letter's headers."""

    request_id: str
    answer: Any = None
    dead_letter: dict[str, str] | None = None

    def result(self) -> Any:
        """The answer; :class:`RequestFailed` with the dead letter's reason if there is one."""
        if self.dead_letter is None:
            return self.answer
        letter = self.dead_letter
        raise RequestFailed(
            f"request {self.request_id!r} failed at step {letter.get('step', '?')!r}: "
            f"{letter.get('error_type', '?')}: {letter.get('error', '')}",
            request_id=self.request_id,
            error_type=letter.get("error_type", ""),
            step=letter.get("step", ""),
        )


class Replies:
    """A producer to ``source`` and a reader of ``sink`` and ``dlq`` (from their end when
    started), on an event loop of their own in a background thread."""

    def __init__(self, bootstrap: str, source: str, sink: str, dlq: str, config: KafkaConfig) -> None:
        self.bootstrap, self.source, self.topics, self.config = bootstrap, source, [sink, dlq], config
        self.dlq = dlq
        self._waiting: dict[str, Future[Reply]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="streamserve-replies", daemon=True)
        self._thread.start()
        self._reader: asyncio.Future[None] | None = None
        self._call(self._start())

    def send(self, requests: list[Request]) -> list[Future[Reply]]:
        """Produce ``requests``; a future per request that resolves with its :class:`Reply`."""
        futures = []
        with self._lock:
            for request in requests:
                futures.append(self._waiting.setdefault(request.id, Future()))
        self._call(self._produce(requests))
        return futures

    def forget(self, request_ids: list[str]) -> None:
        """Stop waiting for these requests (their time ran out)."""
        with self._lock:
            for request_id in request_ids:
                self._waiting.pop(request_id, None)

    def close(self) -> None:
        """Stop reading, close the clients and the loop."""
        if self._loop.is_closed():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self) -> None:
        options = self.config.client_options()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=1, **options)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, **options)
        await start_client(self.producer, self.bootstrap, self.config, "producer")
        await start_client(self.consumer, self.bootstrap, self.config, "reply consumer")
        partitions = [
            TopicPartition(topic, number)
            for topic in self.topics
            for number in sorted(await self.producer.partitions_for(topic))
        ]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end positions now: replies from here on count
            await self.consumer.position(partition)
        self._reader = asyncio.ensure_future(self._read())

    async def _produce(self, requests: list[Request]) -> None:
        sent = []
        for request in requests:
            headers = [("id", request.id.encode())]
            headers += [(name, value) for name, value in request.headers.items() if name != "id"]
            sent.append(await self.producer.send(self.source, request.value(), key=request.key, headers=headers))
        await asyncio.gather(*sent)

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=1000)
            for partition, records in batches.items():
                for record in records:
                    self._deliver(partition.topic, record)

    def _deliver(self, topic: str, record: Any) -> None:
        headers = {name: (value or b"").decode(errors="replace") for name, value in record.headers}
        request_id = headers.get("id", "")
        with self._lock:
            future = self._waiting.pop(request_id, None)
        if future is None or future.done():
            return
        if topic == self.dlq:
            future.set_result(Reply(request_id, dead_letter=headers))
        else:
            future.set_result(Reply(request_id, answer=decoded_body(record.value)))

    async def _stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        for client in (self.consumer, self.producer):
            await client.stop()
