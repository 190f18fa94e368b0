"""The work of the iris lr path's four hops, written by hand: what both floor chains run.

source -> pre -> models -> lr -> post -> sink, as streamserve's iris graph does it for model lr:

- pre: parse the JSON request, cast every feature to float (the iris example's Preprocess), msgpack;
- models: route by the ``model`` header (else the body's ``model``); the record goes on as it is,
  undecoded, since a router needs nothing else;
- lr: the rows of the whole batch in one ``predict`` of the same LogisticRegression file streamserve's
  lr worker loads, split back per request into ``{id, model_name, outputs, timestamp}``;
- post: add the species names, write the answer as JSON, the sink format streamserve writes.

Keys and headers travel unchanged, so the reader matches answers by the ``id`` header as it does
streamserve's. Left out, as a floor should: dead letters and the request kept for their replay,
internal ids, hop headers, per-event error isolation. That is what streamserve's figure pays for.
Also used: the same JSON and msgpack libraries as streamserve, so a codec choice is not measured.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import msgpack
import numpy as np

HOPS = ("pre", "models", "lr", "post")
SPECIES = ("setosa", "versicolor", "virginica")
MODEL = "lr"

Headers = Sequence[tuple[str, bytes]]
Transform = Callable[[list[bytes], list[Headers]], list[bytes]]


def pre(values: list[bytes], headers: list[Headers]) -> list[bytes]:
    """JSON requests -> msgpack bodies with float features."""
    out = []
    for value in values:
        body = json.loads(value.decode())
        body["inputs"] = [[float(v) for v in row] for row in body["inputs"]]
        out.append(msgpack.packb(body))
    return out


def models(values: list[bytes], headers: list[Headers]) -> list[bytes]:
    """The records routed to lr, as they came; anything else is refused (the floor serves lr only)."""
    for value, record_headers in zip(values, headers):
        model = next((v for k, v in record_headers if k == "model"), None)
        if model is None:
            model = str(msgpack.unpackb(value).get("model", "")).encode()
        if model != MODEL.encode():
            raise ValueError(f"the floor chain serves model {MODEL} only, got {model!r}")
    return values


def lr(estimator: Any) -> Transform:
    """The lr hop around a fitted estimator: one predict per batch."""

    def hop(values: list[bytes], headers: list[Headers]) -> list[bytes]:
        bodies = [msgpack.unpackb(value) for value in values]
        rows = [row for body in bodies for row in body["inputs"]]
        labels = estimator.predict(np.asarray(rows, dtype=np.float64)).tolist()
        stamp = datetime.now(timezone.utc).isoformat()
        out, start = [], 0
        for body in bodies:
            stop = start + len(body["inputs"])
            answer = {"id": body["id"], "model_name": MODEL, "outputs": labels[start:stop], "timestamp": stamp}
            out.append(msgpack.packb(answer))
            start = stop
        return out

    return hop


def post(values: list[bytes], headers: list[Headers]) -> list[bytes]:
    """msgpack answers -> JSON answers with species names."""
    out = []
    for value in values:
        body = msgpack.unpackb(value)
        body["species"] = [SPECIES[int(label)] for label in body["outputs"]]
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def transform(hop: str) -> Transform:
    """The work of ``hop``; lr loads the model file streamserve's lr worker loads."""
    if hop != "lr":
        return {"pre": pre, "models": models, "post": post}[hop]
    from examples.iris.iris import IrisModel

    model = IrisModel("lr", algorithm="lr")
    model.load()
    return lr(model.model)


def arguments(doc: str | None) -> argparse.Namespace:
    """The command line of a hop process: the hop, its topics and group, AgentSettings overrides."""
    cli = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("hop", choices=HOPS)
    cli.add_argument("--bootstrap", required=True)
    cli.add_argument("--input", required=True)
    cli.add_argument("--output", required=True)
    cli.add_argument("--group", required=True)
    cli.add_argument("--set", default="", help="AgentSettings overrides, name=value[,name=value...]")
    return cli.parse_args()


def settings(overrides_text: str) -> Any:
    """This checkout's AgentSettings with the overrides: the chains use streamserve's own values."""
    import overrides

    settings_class = overrides.agent_settings_class()
    return settings_class(**overrides.coerce(settings_class, overrides.split(overrides_text)))
