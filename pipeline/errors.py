"""streamserve's exception types: one root, one-line subclasses."""

from __future__ import annotations


class StreamServeError(Exception):
    """Root of every error streamserve raises on purpose."""


class GraphError(StreamServeError):
    """The graph is malformed: unknown, duplicate or cyclic steps, bad options."""


class StepError(StreamServeError):
    """A step could not process an event (bad input, a model that raised)."""


class RoutingError(StepError):
    """An event names no model, or a model the router does not know."""


class CodecError(StepError):
    """Bytes that are neither msgpack nor JSON, or an envelope of the wrong shape."""


class ProtocolError(StreamServeError):
    """A V2 path or request the mock server does not understand."""


class BrokerError(StreamServeError):
    """The embedded broker cannot start (no Java, no jars, port taken) or stopped."""


class DeploymentError(StreamServeError):
    """Topics or agents cannot be set up against the cluster."""


class TransportError(StreamServeError):
    """The broker could not take or give records now; the batch is delivered again later."""


class RecordTooLarge(TransportError):
    """A record is over the producer's or the topic's size limit."""


class RequestFailed(StreamServeError):
    """A request to a deployed graph was dead-lettered; ``error_type`` and ``step`` say where and why."""

    def __init__(self, message: str, *, request_id: str = "", error_type: str = "", step: str = "") -> None:
        super().__init__(message)
        self.request_id, self.error_type, self.step = request_id, error_type, step
