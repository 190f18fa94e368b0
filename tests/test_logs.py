"""The command line's log limiter: a storm of one message becomes a line per interval."""

from __future__ import annotations

import logging

from pipeline.logs import RepeatLimiter


def test_repeats_are_suppressed_then_counted():
    limiter = RepeatLimiter(interval_s=0.0)
    assert limiter.filter(logging.makeLogRecord({"name": "aiokafka", "msg": "down %s"}))
    slow = RepeatLimiter(interval_s=3600)
    records = [
        logging.makeLogRecord({"name": "aiokafka", "msg": "Unable connect to node %s", "args": (i,)})
        for i in range(1000)
    ]
    passed = [record for record in records if slow.filter(record)]
    assert len(passed) == 1 and passed[0].args == (0,)
    other = logging.makeLogRecord({"name": "aiokafka", "msg": "another message"})
    assert slow.filter(other)
    slow._last[("aiokafka", "Unable connect to node %s")] = (float("-inf"), 999)
    again = logging.makeLogRecord({"name": "aiokafka", "msg": "Unable connect to node %s", "args": (1,)})
    assert slow.filter(again) and again.getMessage().startswith("Unable connect to node 1 (and 999 more like it")
    ours = [logging.makeLogRecord({"name": "pipeline.agent", "msg": "agent %s assigned"}) for _ in range(3)]
    assert all(slow.filter(record) for record in ours)  # only the Kafka client's lines are limited
