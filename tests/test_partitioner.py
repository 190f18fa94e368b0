"""Keyed records land where Kafka's default partitioner puts them, on every transport."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from pipeline.runtime import partitioner
from pipeline.runtime.partitioner import key_partition, murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: the Java client's values (signed ints)
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_is_the_java_clients() -> None:
    for data, signed in JAVA_MURMUR2.items():
        assert murmur2(data) == signed & 0xFFFFFFFF, data


@given(st.binary(max_size=300))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_key_partition_matches_the_default_partitioner(key: bytes, count: int) -> None:
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert key_partition(key, partitions) == expected
    assert key_partition(key, partitions) == expected  # once more, from the kept hash


def test_kept_hashes_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(partitioner, "KNOWN_KEYS", 8)
    monkeypatch.setattr(partitioner, "_hashes", {})
    for number in range(50):
        key = f"request-{number}".encode()
        assert key_partition(key, [0, 1, 2]) == DefaultPartitioner()(key, [0, 1, 2], [0, 1, 2])
    long_key = b"k" * (partitioner.KEPT_KEY_BYTES + 1)
    assert key_partition(long_key, [0, 1, 2]) == DefaultPartitioner()(long_key, [0, 1, 2], [0, 1, 2])
    assert 0 < len(partitioner._hashes) <= 8 and long_key not in partitioner._hashes
