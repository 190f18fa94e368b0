"""The floors as benchmark targets: the iris lr path's four hops written by hand, one process each.

``Chain(bootstrap, "aiokafka")`` runs bench/rawchain.py per hop, ``Chain(bootstrap, "confluent")``
bench/confluentchain.py, on fresh topics ``<name>.{requests,models,lr,post,predictions}`` of 4
partitions (the deployments' default). ``settings`` are AgentSettings overrides, applied to every hop
as streamserve's workers would take them.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Literal

from common import BENCH, RESULTS, Target, create, fresh_name
from hops import HOPS
from processes import Processes

Client = Literal["aiokafka", "confluent"]
SCRIPTS: dict[str, str] = {"aiokafka": "rawchain.py", "confluent": "confluentchain.py"}
MODULES: dict[str, str] = {"aiokafka": "aiokafka", "confluent": "confluent_kafka"}


def missing(client: Client) -> str:
    """Why the ``client`` chain cannot run here ("" when it can)."""
    if importlib.util.find_spec(MODULES[client]) is None:
        return f"{MODULES[client]} is not installed (pip install -e '.[bench]')"
    return ""


class Chain(Target):
    """The four hop processes of one client library."""

    entry = "pre"
    dlq = None

    def __init__(self, bootstrap: str, client: Client, settings: dict[str, Any] | None = None) -> None:
        self.bootstrap, self.client, self.settings = bootstrap, client, dict(settings or {})
        self.name = fresh_name(f"floor-{client}")
        self.topics = [f"{self.name}.{topic}" for topic in ("requests", "models", "lr", "post", "predictions")]
        self.source, self.sink = self.topics[0], self.topics[-1]
        self.label = f"hand-written {client} chain (pre, models, lr, post)"
        if self.settings:
            self.label += " [" + ", ".join(f"{key}={value}" for key, value in self.settings.items()) + "]"
        self.workers = Processes(self._command, RESULTS / "logs" / self.name)

    def _command(self, hop: str, instance: int) -> list[str]:
        source, target = self.topics[HOPS.index(hop)], self.topics[HOPS.index(hop) + 1]
        command = [sys.executable, str(BENCH / SCRIPTS[self.client]), hop, "--bootstrap", self.bootstrap]
        command += ["--input", source, "--output", target, "--group", f"{self.name}.{hop}"]
        return [*command, "--set", ",".join(f"{key}={value}" for key, value in self.settings.items())]

    def __enter__(self) -> Chain:
        create(self.bootstrap, self.topics)
        for hop in HOPS:
            self.workers.start(hop)
        return self
