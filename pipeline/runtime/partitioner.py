"""Where a keyed record goes: Kafka's default partitioner (murmur2 of the key, as the Java client
and aiokafka compute it), computed once per key while the key is among the recently seen."""

from __future__ import annotations

import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")
KNOWN_KEYS = 65_536  # keys whose hash is kept (entity keys repeat: users, devices, model names)
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
        if len(_hashes) >= KNOWN_KEYS:  # unbounded distinct keys (request ids): start again
            _hashes.clear()
        positive = _hashes[key] = murmur2(key) & 0x7FFFFFFF
    return partitions[positive % len(partitions)]
