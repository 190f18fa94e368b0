"""The worker process's own settings (the agents themselves are tested over Kafka elsewhere)."""

from __future__ import annotations

import gc

from pipeline.runner import settle_collector


def test_a_worker_freezes_what_start_up_made_and_collects_the_young_less_often():
    before = gc.get_threshold()
    try:
        settle_collector(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 1000  # modules, classes, the test session: out of every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
