"""ModelRouter: sends each event to the model its request names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.errors import RoutingError
from pipeline.events import Event
from pipeline.protocol import parse_path
from steps.base import Emit, Outcome, Step


class ModelRouter(Step):
    """Routes an event to one of its models by key.

    The key comes from the ``model`` header, else ``body["model"]``, else the
    V2 path (``/v2/models/<key>/...``), else ``default``. Models are added by
    :meth:`pipeline.graph.RouterNode.add_model`; the router emits on the route
    named after the model key.
    """

    def __init__(self, *, default: str | None = None) -> None:
        self.default = default
        self.models: dict[str, Step] = {}

    def routes(self) -> Mapping[str, str]:
        return {key: key for key in self.models}

    def parts(self) -> Sequence[Step]:
        return list(self.models.values())

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            try:
                outcomes.append(Emit(event, self.resolve(event)))
            except Exception as exc:
                outcomes.append(self.fail(event, exc))
        return outcomes

    def resolve(self, event: Event) -> str:
        """The model key ``event`` asks for; raises :class:`RoutingError` if unknown."""
        version = None
        key: Any = event.headers.get("model")
        if key is not None:
            key = key.decode() if isinstance(key, bytes) else str(key)
        elif isinstance(event.body, dict) and event.body.get("model") is not None:
            key = str(event.body["model"])
        elif event.path != "/":
            named = parse_path(event.path)
            key, version = named.model, named.version
        key = key or self.default
        if key is None:
            raise RoutingError(
                f"router {self.name!r}: the event names no model (set the 'model' header, "
                f"body['model'] or a /v2/models/<key>/infer path); known models: {self.known()}"
            )
        model = self.models.get(key)
        if model is None:
            raise RoutingError(f"router {self.name!r}: unknown model {key!r}; known models: {self.known()}")
        served = getattr(model, "version", None)
        if version is not None and served is not None and version != served:
            raise RoutingError(f"router {self.name!r}: model {key!r} serves version {served!r}, not {version!r}")
        return key

    def known(self) -> str:
        """The model keys, comma separated."""
        return ", ".join(self.models) or "(none)"
