"""Node kinds, one module each; :mod:`baton.nodes.base` is the protocol they share."""

from baton.nodes.ask import Ask
from baton.nodes.back import Back
from baton.nodes.base import Done, GraphError, Node, Retry, Run
from baton.nodes.gate import FourEyes, Gate
from baton.nodes.step import Step

__all__ = ["Ask", "Back", "Done", "FourEyes", "Gate", "GraphError", "Node", "Retry", "Run", "Step"]
