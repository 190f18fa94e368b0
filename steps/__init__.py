"""The step kinds users compose into a serving graph."""

from steps.base import Emit, Fail, Outcome, Step, TaskStep
from steps.ensemble import Ensemble, VotingEnsemble
from steps.join import Join
from steps.model import ModelServer, SKLearnModelServer
from steps.router import ModelRouter
from steps.transform import Dedupe, Enrich, Filter

__all__ = [
    "Dedupe",
    "Emit",
    "Enrich",
    "Ensemble",
    "Fail",
    "Filter",
    "Join",
    "ModelRouter",
    "ModelServer",
    "Outcome",
    "SKLearnModelServer",
    "Step",
    "TaskStep",
    "VotingEnsemble",
]
