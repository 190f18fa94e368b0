"""ModelRouter: sends each event to the model its request names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.errors import RoutingError
from pipeline.events import Event
from pipeline.protocol import parse_path
from steps.base import Emit, Outcome, Step


class ModelRouter(Step):
    """Routes an event to one of its models by key, as MLRun's router does.

    The model comes from the V2 path (``/v2/models/<model>[/versions/<v>]/...``), else the
    ``model`` header, else ``body["model"]``, else ``default``; a router-level path
    (``/v2/models/infer``) goes to ``default``. Keys may carry a version (``m:v2``): a request
    for ``m`` without a version goes to the key ``m`` if there is one, else to the version of
    ``m`` added last. Subclass it and override :meth:`resolve` (or :meth:`preprocess`) for
    other rules; models are added by :meth:`pipeline.graph.RouterNode.add_model`.
    """

    def __init__(self, *, default: str | None = None, name: str | None = None, **params: Any) -> None:
        self.default = default
        self.name = name or ""
        self.params = params
        self.models: dict[str, Step] = {}

    def routes(self) -> Mapping[str, str]:
        return {key: key for key in self.models}

    def parts(self) -> Sequence[Step]:
        return list(self.models.values())

    def preprocess(self, event: Event) -> Event:
        """Adapt an event before it is routed; the default returns it unchanged."""
        return event

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            try:
                event = self.preprocess(event)
                outcomes.append(Emit(event, self.resolve(event)))
            except Exception as exc:
                outcomes.append(self.fail(event, exc))
        return outcomes

    def resolve(self, event: Event) -> str:
        """The model key ``event`` asks for; raises :class:`RoutingError` if unknown."""
        named = parse_path(event.path)
        key, version = named.model, named.version
        if key is None:
            header = event.headers.get("model")
            body = event.body.get("model") if isinstance(event.body, dict) else None
            key = header.decode(errors="replace") if header else (str(body) if body is not None else self.default)
        if key is None:
            raise RoutingError(
                f"router {self.name!r}: the event names no model (set the 'model' header, "
                f"body['model'] or a /v2/models/<key>/infer path, or a default); known models: {self.known()}"
            )
        if ":" in key and version is None:
            key, version = key.split(":", 1)
        return self._key(key, version)

    def _key(self, model: str, version: str | None) -> str:
        if version is not None:
            if f"{model}:{version}" in self.models:
                return f"{model}:{version}"
            served = getattr(self.models.get(model), "version", None)
            if served is not None and served == version:
                return model
            versions = [k.split(":", 1)[1] for k in self.models if k.startswith(f"{model}:")] or [served]
            if model in self.models or versions != [None]:
                raise RoutingError(
                    f"router {self.name!r}: model {model!r} has no version {version!r}; versions: "
                    f"{', '.join(str(v) for v in versions)}"
                )
        elif model in self.models:
            return model
        else:
            latest = [key for key in self.models if key.startswith(f"{model}:")]
            if latest:
                return latest[-1]
        raise RoutingError(f"router {self.name!r}: unknown model {model!r}; known models: {self.known()}")

    def known(self) -> str:
        """The model keys, comma separated."""
        return ", ".join(self.models) or "(none)"
