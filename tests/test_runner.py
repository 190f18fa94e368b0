"""The worker process's own settings (the agents themselves are tested over Kafka elsewhere)."""

from __future__ import annotations

import gc
import weakref

from pipeline.runner import settled_collector


class _Cycle:
    def __init__(self) -> None:
        self.itself = self


def test_agents_run_with_start_up_frozen_and_leave_the_collector_as_it_was():
    before, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    held = _Cycle()
    gone = weakref.ref(held)
    with settled_collector(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > frozen_before + 1000  # modules, classes, the test session
        del held  # a frozen cycle dropped while the agents run ...
        gc.collect()
        assert gone() is not None
    gc.collect()
    assert gone() is None  # ... is collected once they stop
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen_before)


def test_no_threshold_leaves_the_collector_alone():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with settled_collector(None):
        assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)
