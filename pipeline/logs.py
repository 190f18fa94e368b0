"""Logging set-up for the command line: one line per message, repeats rate-limited."""

from __future__ import annotations

import logging
import os
import time


class RepeatLimiter(logging.Filter):
    """Lets a message template of a ``prefix`` logger through at most once per ``interval_s``.

    A broker outage makes the Kafka client log the same connection error thousands of
    times a second; this keeps the first, then one line per interval saying how many
    were suppressed.
    """

    def __init__(self, interval_s: float = 10.0, prefix: str = "aiokafka") -> None:
        super().__init__()
        self.interval_s = interval_s
        self.prefix = prefix
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval_s:
            self._last[key] = (last, suppressed + 1)
            return False
        if suppressed:
            record.msg = f"{record.msg} (and {suppressed} more like it in {now - last:.0f} s)"
        self._last[key] = (now, 0)
        return True


def configure(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose`` or ``$STREAMSERVE_LOG_LEVEL``); Kafka
    client chatter at WARNING and above; repeats limited."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatLimiter())
    level = "DEBUG" if verbose else os.environ.get("STREAMSERVE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
