"""What a run is at any moment, and what it shows of itself.

:class:`RunState` holds everything a run has done and decided: one
serializable model, so a run can be carried whole into its next execution.
:class:`RunView` is what ``when=`` predicates read of it; :class:`RunStatus`,
:class:`SigningView` and :class:`RunResult` are what queries and the run's
end answer.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from baton.config import RunConfig
from baton.gates import GateState, Refusal, StopRecord
from baton.outside import ReceivedEvent
from baton.routing import Attempt
from baton.signing import Signature, digest

M = TypeVar("M", bound=BaseModel)

# "cancelled": stopped while it ran (a stop, a cancel, or another branch's
# failure); "failed": failed for good on its own.
NodeStatus = Literal["pending", "running", "waiting", "finished", "skipped", "failed", "cancelled"]
RunPhase = Literal["starting", "running", "waiting", "completed", "rejected", "stopped", "failed"]


class RunInput(BaseModel):
    """Fields every process input carries besides its own.

    What steers a run (thresholds, routing, directory) is never part of it:
    the run snapshots the worker's own files. An input with fields its
    process does not declare is refused, so a starter cannot smuggle any in."""

    model_config = ConfigDict(extra="forbid")

    requested_by: str = Field(
        default="", description="The directory user or service who starts the run"
    )
    signature: Signature | None = Field(
        default=None, description="The requester's signature of the input; unsigned starts fail"
    )

    def signed_fields(self, process: str) -> dict[str, Any]:
        """What the requester's signature covers: the process and the whole input."""
        return {
            "process": process,
            "requested_by": self.requested_by,
            "input_digest": digest(self.model_dump(mode="json", exclude={"signature"})),
        }


class NodeRecord(BaseModel):
    node: str
    kind: str
    status: NodeStatus = "pending"
    visits: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    detail: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class Compensable(BaseModel):
    """A visit of a node that declared how to undo it. Listed before its
    activity is scheduled (see :mod:`baton.compensation`): a visit stopped,
    cancelled or failed while its activity ran may have written all the same,
    and is undone with the rest."""

    node: str
    visit: int
    output: Any = None
    input: Any = Field(default=None, description="What the visit's activity was sent")
    finished: bool = Field(
        default=True, description="False while its activity runs, and for ever if it never returned"
    )


class RunState(BaseModel):
    """All of a run's state. Restore a dumped one with :meth:`restore`."""

    input: SerializeAsAny[RunInput] | None = Field(
        default=None, description="The process's input, once admitted"
    )
    config: RunConfig | None = Field(default=None, description="The snapshot taken at start")
    records: dict[str, NodeRecord]
    # Nodes the scheduler counts as done; a node sent back to runs again.
    done: set[str] = Field(default_factory=set)
    gates: dict[str, GateState] = Field(default_factory=dict)
    refusals: list[Refusal] = Field(default_factory=list)
    finish_order: list[str] = Field(default_factory=list)
    outcome: RunPhase = "starting"
    rejected: bool = False
    error: str | None = None
    stop: StopRecord | None = None
    compensable: list[Compensable] = Field(
        default_factory=list,
        description="In the order the visits were scheduled (runs started before "
        "baton.compensation.COMPENSATE_IN_FLIGHT: finished)",
    )
    compensated: list[str] = Field(
        default_factory=list, description="The nodes undone, in the order their undos finished"
    )
    compensation_failed: str | None = None
    changes_requested: dict[str, int] = Field(default_factory=dict)
    feedback: dict[str, tuple[list[str], Any]] = Field(
        default_factory=dict,
        description="A reviewer's change request for the node to redo, with the answer it is about",
    )
    nonces: set[str] = Field(
        default_factory=set, description="Of the signed acts taken: each act counts once"
    )
    events: list[ReceivedEvent] = Field(
        default_factory=list,
        description="Accepted outside events, in arrival order, kept until an Await takes them",
    )
    # The run's `workflow.patched` answers (see baton.nodes.gate).
    clockless_view: bool = False
    states_why: bool = False
    undo_in_flight: bool = False
    trail_numbering: dict[str, int] = Field(
        default_factory=dict, description="How often each audit event meaning has occurred"
    )
    execution: int = Field(
        default=1,
        ge=1,
        description="Which of the run's executions this is: each continue-as-new starts the next",
    )

    @classmethod
    def restore(cls, data: Any, input_model: type[BaseModel]) -> RunState:
        """A dumped state as it was, its input as the process's own model."""
        return cls.model_validate(data, context={"input_model": input_model})

    @field_validator("input", mode="before")
    @classmethod
    def _as_process_input(cls, value: Any, info: ValidationInfo) -> Any:
        model = (info.context or {}).get("input_model")
        return model.model_validate(value) if model is not None and value is not None else value

    @model_validator(mode="after")
    def _attempts_as_models(self) -> RunState:
        # An Ask's attempts are kept as models in its record's meta, which
        # the status shows as they are.
        for record in self.records.values():
            if "attempts" in record.meta:
                record.meta["attempts"] = [
                    Attempt.model_validate(a) for a in record.meta["attempts"]
                ]
        return self

    @field_serializer("done", "nonces")
    def _sorted(self, value: set[str]) -> list[str]:
        return sorted(value)


class RunStatus(BaseModel):
    """What `baton status` shows: where the run is and what it has done."""

    workflow_id: str
    run_id: str = Field(default="", description="The first execution's run id: acts bind to it")
    process: str
    state: RunPhase
    requested_by: str
    config_digest: str
    graph_digest: str = Field(default="", description="Which graph the run runs (Graph.digest)")
    current: list[str]
    nodes: list[NodeRecord]
    gates: list[GateState]
    refusals: list[Refusal]
    events: list[ReceivedEvent] = Field(default_factory=list)
    stopped: StopRecord | None = None
    compensated: list[str] = Field(
        default_factory=list, description="What the run undid (stopped, cancelled or failed)"
    )
    compensation_failed: str | None = None
    execution: int = Field(default=1, description="Histories so far: 1 + times continued as new")
    cost_usd: float = 0.0
    min_confidence: float | None = None
    error: str | None = None


class SigningView(BaseModel):
    """What a signer binds an act to: the run, and the gate as it shows it now
    (None when that gate is not open). A small answer, unlike the status: a
    decision is signed over the gate, not over the whole run."""

    run_id: str
    gate: GateState | None = None


class RunResult(BaseModel):
    workflow_id: str
    process: str
    outcome: Literal["completed", "rejected", "stopped"]
    outputs: dict[str, Any]
    path: list[str] = Field(description="Nodes that ran, in the order they finished.")
    skipped: dict[str, str] = Field(description="Skipped nodes and why.")


PolicyLoaders = Mapping[str, Callable[[Mapping[str, Any]], BaseModel]]


def run_policy(config: RunConfig, loaders: PolicyLoaders, name: str) -> BaseModel:
    """The run's ``[policies.<name>]`` table, through its graph's loader."""
    return loaders[name](config.policies.get(name, {}))


class RunView:
    """The read-only view of a run that ``when=`` predicates receive."""

    def __init__(
        self,
        run_input: BaseModel,
        records: Mapping[str, NodeRecord],
        config: RunConfig,
        policies: PolicyLoaders | None = None,
    ) -> None:
        self.input = run_input
        self.config = config
        self._records = records
        self._policies = policies or {}

    def policy(self, name: str, model: type[M]) -> M:
        """The process's ``[policies.<name>]`` table as ``model``, through
        the loader its graph declares (checked when the run started)."""
        loaded = run_policy(self.config, self._policies, name)
        assert isinstance(loaded, model)
        return loaded

    def output(self, node_id: str) -> Any:
        return self._records[node_id].output

    def get(self, node_id: str, model: type[M]) -> M | None:
        value = self.output(node_id)
        return None if value is None else model.model_validate(value)

    def meta(self, node_id: str) -> dict[str, Any]:
        return self._records[node_id].meta

    def confidence(self, node_id: str) -> float:
        return float(self.meta(node_id).get("confidence", 0.0))

    def confidence_method(self, node_id: str) -> str:
        return str(self.meta(node_id).get("confidence_method") or "an unnamed method")

    def notes(self, node_id: str) -> list[str]:
        """What the model that answered an Ask node said about its answer
        (the offline rules name the fields they could not find)."""
        answered = [
            a
            for a in self.meta(node_id).get("attempts", [])
            if a.outcome in ("accepted", "accepted_below_minimum", "low_confidence")
        ]
        return list(answered[-1].notes) if answered else []

    def visits(self, node_id: str) -> int:
        return self._records[node_id].visits
