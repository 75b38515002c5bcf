"""Back: a bounded loop, an edge back to an earlier node."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field
from temporalio.exceptions import ApplicationError

from baton.nodes.base import Done, GraphError, Node, Run
from baton.state import NodeRecord, RunView

if TYPE_CHECKING:
    from baton.graph import Graph


class Back(Node):
    """An edge back to an earlier node, taken while ``when`` holds: every node
    from ``to`` up to this one runs again. ``max_visits`` bounds how often
    ``to`` may run; past it the run fails visibly rather than loop forever.

    ``feedback``, a pure function of the run as ``when`` is, gives the
    loop's reasons (a critic's findings) to ``to`` when the loop is taken,
    as a reviewer's change request is given (``RunState.feedback``, with
    ``to``'s last output): an Ask repairs with them, an Agent opens its
    next transcript with them."""

    to: str
    max_visits: int = Field(ge=2)
    feedback: Callable[[RunView], list[str]] | None = None

    kind: ClassVar[str] = "back"
    when_skips: ClassVar[bool] = False
    __init__ = Node.__init__  # keeps the positional id for type checkers

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        if self.when is None:
            raise GraphError(f"node '{self.id}': a Back edge needs when= (the loop condition)")
        if self.to not in ancestors:
            raise GraphError(
                f"node '{self.id}': Back(to='{self.to}') must point at a node that runs before it"
            )

    async def run(self, run: Run, record: NodeRecord) -> Done:
        assert self.when is not None
        if not self.when(run.view()):
            record.detail = f"loop not taken: {self.condition_name} false"
            return Done()
        if run.state.records[self.to].visits >= self.max_visits:
            raise ApplicationError(
                f"node '{self.id}': loop back to '{self.to}' reached its bound of "
                f"{self.max_visits} visits",
                type="LoopBoundReached",
                non_retryable=True,
            )
        record.detail = f"loop taken back to '{self.to}'"
        if self.feedback is not None:
            findings = self.feedback(run.view())
            run.state.feedback[self.to] = (findings, run.state.records[self.to].output)
            record.detail += f" with {len(findings)} finding(s)"
        return Done(back_to=self.to)

    def own_edges(self) -> dict[str, Any]:
        told = None if self.feedback is None else self.feedback.__name__
        return {"back_to": self.to, "max_visits": self.max_visits, "feedback": told}

    def mermaid_edges(self) -> list[str]:
        told = "" if self.feedback is None else f", telling {self.feedback.__name__}"
        return [
            f"{self.id} -.->|{self.condition_name}, at most {self.max_visits}x{told}| {self.to}"
        ]
