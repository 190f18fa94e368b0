"""Where a keyed record goes: the Java client's (and aiokafka's) default partitioner, murmur2 of the
key, computed once per short key while it is among the recently seen. (librdkafka's default,
consistent_random, hashes with crc32: a confluent-kafka producer writing to the same topic must set
``partitioner=murmur2_random`` to place a key where streamserve does.)"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")
KNOWN_KEYS = 16_384  # keys whose hash is kept (entity keys repeat: users, devices, model names)
KEPT_KEY_BYTES = 64  # a longer key is hashed every time: the kept hashes stay within a few MiB
_hashes: dict[bytes, int] = {}


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash of ``data`` that Kafka's default partitioner takes (unsigned)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[whole + 2] << 16
        if extra >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``partitions`` (sorted) that Kafka's default partitioner gives ``key``."""
    positive = _hashes.get(key)
    if positive is None:
        positive = murmur2(key) & 0x7FFFFFFF
        if len(key) <= KEPT_KEY_BYTES:
            if len(_hashes) >= KNOWN_KEYS:  # unbounded distinct keys (event ids): start again
                _hashes.clear()
            _hashes[key] = positive
    return partitions[positive % len(partitions)]
