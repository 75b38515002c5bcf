"""Node kinds, one module each; :mod:`baton.nodes.base` is the protocol they share."""

from baton.nodes.agent import Agent
from baton.nodes.ask import Ask
from baton.nodes.awaiting import Await, Awaited
from baton.nodes.back import Back
from baton.nodes.base import Done, GraphError, Node, Retry, Run
from baton.nodes.gate import Approvers, FourEyes, Gate
from baton.nodes.map import Map, Mapped
from baton.nodes.step import Step
from baton.nodes.sub import Sub, SubResult
from baton.nodes.wait import Wait, Waited

__all__ = [
    "Agent",
    "Approvers",
    "Ask",
    "Await",
    "Awaited",
    "Back",
    "Done",
    "FourEyes",
    "Gate",
    "GraphError",
    "Map",
    "Mapped",
    "Node",
    "Retry",
    "Run",
    "Step",
    "Sub",
    "SubResult",
    "Wait",
    "Waited",
]
