"""Client-side calls a person or a program makes on runs: start one, see
where it is, list what waits for a role, deliver a decision.

The same functions back the `baton` CLI and the demo, and they are what the
README shows for use from your own code.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    DescribeWorkflowExecutionResponse,
)
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from baton import search
from baton.codec import PayloadKeys, encrypted_data_converter
from baton.config import Settings
from baton.document_store import (
    DocumentError,
    DocumentRef,
    DocumentStore,
    document_store,
    put_file,
)
from baton.gates import Decision, GateDecision
from baton.keys import Signer
from baton.outside import Act
from baton.runner import GraphWorkflow, RunInput, RunResult, RunStatus, SigningView
from baton.signing import Signature, subject_digest

QUERY_TIMEOUT = timedelta(seconds=10)
R = TypeVar("R", bound=BaseModel)
A = TypeVar("A", bound="AnsweredAct[Any]")
Answer = TypeVar("Answer", bound=BaseModel, covariant=True)
# A workflow task lost with its worker is retried after this. Long enough
# for a busy worker: with 10,000 runs starting at once (bench.parked) no task
# outlived 3.5 s, while 3 s let 1,810 tasks finish late (README, Notes).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=3.5)


class DecisionRefused(Exception):
    """The run refused a decision; ``reason`` says why in words for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunNotReady(DecisionRefused):
    """The run is alive but Temporal would not hand it the decision now: its
    workflow task is being retried (a worker overloaded or failing). Nothing
    was delivered; the same call may be made again."""


class StartError(ValueError):
    """A run could not be started from the given arguments."""


class NoWorkerError(RuntimeError):
    """A query found no worker to answer it."""


async def connect(
    settings: Settings | None = None,
    *,
    wait: float = 0.0,
    data_converter: DataConverter | None = None,
    traced: bool = True,
) -> Client:
    """Connect to Temporal as the settings' envconfig profile says (address,
    namespace, API key, TLS); with ``wait``, keep trying that many seconds
    (a worker started beside its server should not die of a race). Every
    payload is encrypted with the payload keys (baton.codec) unless another
    ``data_converter`` is given. ``traced=False`` leaves OpenTelemetry out, for
    the client and any worker built on it."""
    settings = settings or Settings.from_env()
    if data_converter is None:
        data_converter = encrypted_data_converter(PayloadKeys.from_env(data_dir=settings.data_dir))
    deadline = time.monotonic() + wait
    while True:
        try:
            return await Client.connect(
                **settings.client_connect_config(),
                data_converter=data_converter,
                # A run started here is one trace: this call's span is its root.
                # Also a worker's, which takes on its client's interceptors: spans
                # for every run, whether or not its starter traced the start.
                interceptors=[TracingInterceptor(always_create_workflow_spans=True)]
                if traced
                else [],
            )
        except RuntimeError as err:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"cannot reach Temporal at {settings.address} ({err}); start it with "
                    "`baton server`, or point TEMPORAL_ADDRESS or TEMPORAL_PROFILE at a "
                    "running server"
                ) from None
            await asyncio.sleep(1.0)


def build_input(
    workflow_cls: type[GraphWorkflow],
    args: Sequence[str],
    *,
    store: DocumentStore | None = None,
    **extra: Any,
) -> RunInput:
    """A process input from command-line arguments: positional arguments fill
    the process's own required fields in order. A field that takes a
    document (a DocumentRef) takes a file name: the file goes into the
    document store (``store``, else this process's) and the run gets its
    reference."""
    model = workflow_cls.graph.input
    own = [
        name
        for name, info in model.model_fields.items()
        if name not in RunInput.model_fields and info.is_required()
    ]
    if len(args) != len(own):
        raise StartError(
            f"{workflow_cls.graph.name} takes {len(own)} argument(s): "
            f"{' '.join(f'<{n}>' for n in own)}; got {len(args)}"
        )
    values: dict[str, Any] = dict(extra)
    for name, arg in zip(own, args, strict=True):
        if model.model_fields[name].annotation is DocumentRef:
            values[name] = put_document(Path(arg), store or document_store())
        else:
            values[name] = arg
    try:
        request = model.model_validate(values)
    except ValidationError as err:
        raise StartError(f"invalid input for {workflow_cls.graph.name}: {err}") from None
    assert isinstance(request, RunInput)
    return request


def put_document(path: Path, store: DocumentStore) -> DocumentRef:
    """Put the file at ``path`` in ``store``; StartError when it cannot be."""
    try:
        return put_file(store, path)
    except FileNotFoundError:
        raise StartError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise StartError(f"{path} is a folder: give a document file") from None
    except DocumentError as err:
        raise StartError(str(err)) from None


def new_workflow_id(process: str, hint: str = "") -> str:
    slug = "".join(c if c.isalnum() else "-" for c in hint.lower()).strip("-")
    parts = [process, slug[:40], secrets.token_hex(4)]
    return "-".join(p for p in parts if p)


def _id_hint(request: RunInput) -> str:
    """The start of the run's document hash: ids, search attributes and
    the Web UI's lists are not encrypted, so a file name (which may name a
    vendor or a person) stays out of them."""
    for value in request.__dict__.values():
        if isinstance(value, DocumentRef):
            return value.sha256[:12]
    return ""


async def start_run(
    client: Client,
    workflow_cls: type[GraphWorkflow],
    request: RunInput,
    *,
    task_queue: str,
    workflow_id: str | None = None,
    signer: Signer | None = None,
) -> WorkflowHandle[Any, RunResult]:
    """Start a run of ``workflow_cls`` for ``request``, signed by its
    requester (``signer``, else the requester's key file): the run refuses
    a start its requester did not sign."""
    name = workflow_cls.graph.name
    signer = signer or Signer.load(request.requested_by)
    if signer.user != request.requested_by:
        raise StartError(
            f"the run is requested by '{request.requested_by}' but would be signed by "
            f"'{signer.user}': a run is started by the person or service who signs it"
        )
    workflow_id = (
        workflow_id
        or workflow_cls.graph.workflow_id_for(request)
        or new_workflow_id(name, _id_hint(request))
    )
    signature = signer.sign("start", request.signed_fields(name), workflow_id=workflow_id)
    return await client.start_workflow(
        name,
        request.model_copy(update={"signature": signature}),
        id=workflow_id,
        task_queue=task_queue,
        result_type=RunResult,
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        # What the run would upsert first: set here, it costs the run no
        # upsert of its own (see GraphWorkflow._publish).
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search.PROCESS, name),
                SearchAttributePair(search.STATUS, "running"),
            ]
        ),
    )


async def run_status(client: Client, workflow_id: str) -> RunStatus:
    return await _query(client, workflow_id, "status", RunStatus)


async def _query(
    client: Client, workflow_id: str, name: str, result_type: type[R], *args: Any
) -> R:
    """Query the run's current execution. A query that meets the run as it
    continues as new (baton.carry) is lost with the execution it went to
    and times out: it is asked once more of the execution that took over."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await _query_once(handle, name, result_type, *args)
    except NoWorkerError:
        running = await describe_execution(client, workflow_id)
        if not running.workflow_execution_info.execution.run_id:
            raise
        current = client.get_workflow_handle(
            workflow_id, run_id=running.workflow_execution_info.execution.run_id
        )
        return await _query_once(current, name, result_type, *args)


async def _query_once(
    handle: WorkflowHandle[Any, Any], name: str, result_type: type[R], *args: Any
) -> R:
    try:
        result: R = await handle.query(
            name, *args, result_type=result_type, rpc_timeout=QUERY_TIMEOUT
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise LookupError(f"no run with id '{handle.id}'") from None
        if err.status == RPCStatusCode.DEADLINE_EXCEEDED or "Timeout" in err.message:
            raise NoWorkerError(
                f"no worker answered within {QUERY_TIMEOUT.total_seconds():.0f}s: "
                "is `python worker.py` running against this server and task queue?"
            ) from None
        raise
    return result


class AnsweredAct(Protocol[Answer]):
    """What signing and delivering need of an act (a baton.outside.SignedAct):
    its user and signature, what the signature covers, and the update that
    takes it with the model the run answers."""

    @property
    def user(self) -> str: ...
    @property
    def signature(self) -> Signature | None: ...
    @property
    def action(self) -> Act: ...
    @property
    def answer(self) -> type[Answer]: ...
    def signed_fields(self) -> dict[str, Any]: ...
    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Self: ...


async def sign(client: Client, workflow_id: str, act: A, signer: Signer | None = None) -> A:
    """``act`` signed by its user (``signer``, else the user's key file) for
    the run as it shows it now; a decision also over its gate's round and
    what the gate shows (with any edit an earlier approver made)."""
    signer = signer or Signer.load(act.user)
    view = await _view_to_sign(client, workflow_id, act.gate if isinstance(act, Decision) else "")
    gate = view.gate
    signature = signer.sign(
        act.action,
        act.signed_fields(),
        workflow_id=workflow_id,
        run_id=view.run_id,
        round=gate.round if gate else 0,
        shown_digest=subject_digest(gate.shown, gate.edited_output) if gate else "",
    )
    return act.model_copy(update={"signature": signature})


async def submit(
    client: Client,
    workflow_id: str,
    act: AnsweredAct[R],
    signer: Signer | None = None,
    *,
    update_id: str | None = None,
) -> R:
    """Sign ``act`` (unless it is signed already) and deliver it through its
    update: a decision to its gate, a stop (the run compensates what it
    declared compensable and ends as stopped), an event (kept for the Await
    that takes it). A refusal raises DecisionRefused with the run's reason.

    To repeat a delivery whose answer was lost (an RPC timeout), pass the
    same signed act and the same ``update_id`` again: Temporal answers with
    the first result instead of handing the run a replay."""
    if act.signature is None:
        act = await sign(client, workflow_id, act, signer)
    return await deliver(client, workflow_id, act, update_id=update_id)


# The names callers know each kind of act by.
decide = stop_run = send_event = submit
sign_decision = sign_stop = sign


async def decide_in_turn(
    client: Client,
    workflow_id: str,
    decisions: Sequence[Decision],
    signers: Mapping[str, Signer] | None = None,
) -> list[GateDecision]:
    """Deliver ``decisions`` in order until the gate needs no more approvals
    (under four-eyes the first approval leaves it awaiting a second); returns
    the accepted ones. Each is signed by ``signers[user]``, else the user's
    key file."""
    accepted: list[GateDecision] = []
    for decision in decisions:
        signer = (signers or {}).get(decision.user)
        accepted.append(await decide(client, workflow_id, decision, signer))
        if not accepted[-1].awaiting:
            break
    return accepted


async def _view_to_sign(client: Client, workflow_id: str, gate: str = "") -> SigningView:
    """The run, and ``gate`` if it is open, as the run shows them now: an act
    is signed over what it shows. A run that cannot show it (gone, ended, or
    its task failing) cannot take the act either: the refusal says which."""
    try:
        return await _query(client, workflow_id, "signing_view", SigningView, gate)
    except (LookupError, NoWorkerError, RPCError) as err:
        raise await _refusal(client, workflow_id, str(err)) from None


async def deliver(
    client: Client, workflow_id: str, act: AnsweredAct[R], *, update_id: str | None = None
) -> R:
    """Hand ``act`` to the run as it is, signed by whoever made it or not at
    all (the run then refuses it in its own words): for a front door such as
    the inbox, whose acts are signed in the browser and which must never sign
    with a key file of its own machine.

    The update gets a fresh id unless given one: one id per act of a person,
    which the SDK keeps across its own transport retries. Temporal answers a
    repeated id with the first result without running the handler, so an
    id derived from content would swallow a second, identical approval (a
    later round of the same gate); the run's replay protection is the nonce
    in the act's signature instead."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        result: R = await handle.execute_update(
            act.action,
            act,
            id=update_id or f"{act.action}:{uuid.uuid4()}",
            result_type=act.answer,
        )
        return result
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise DecisionRefused(getattr(cause, "message", None) or str(cause)) from None
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise await _refusal(client, workflow_id, err.message) from None
        raise


async def describe_execution(client: Client, workflow_id: str) -> DescribeWorkflowExecutionResponse:
    """The server's raw description of a run. WorkflowHandle.describe also
    decodes search attributes, which fails on the time-skipping test server."""
    return await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )


async def _refusal(client: Client, workflow_id: str, detail: str) -> DecisionRefused:
    """Temporal refuses an update with the same codes whether the run is gone
    or alive but unable to take it (its workflow task failing): say which."""
    try:
        description = await describe_execution(client, workflow_id)
    except RPCError as describe_err:
        if describe_err.status != RPCStatusCode.NOT_FOUND:
            raise
        return DecisionRefused(
            f"there is no run '{workflow_id}': check the id (`baton inbox` lists the runs "
            "waiting for a decision)"
        )
    status = WorkflowExecutionStatus(description.workflow_execution_info.status)
    if status == WorkflowExecutionStatus.RUNNING:
        return RunNotReady(
            f"run '{workflow_id}' is running but cannot take the decision now ({detail}); "
            "nothing was delivered: try again once `baton status` shows it waiting, and if its "
            "workflow task keeps failing, the worker's log says why"
        )
    return DecisionRefused(
        f"run '{workflow_id}' has already ended ({status.name.lower()}); "
        f"see `baton status {workflow_id}`"
    )


class InboxItem(BaseModel):
    workflow_id: str
    process: str
    node: str
    roles: list[str]
    due_at: datetime | None
    started_at: datetime


async def inbox(client: Client, role: str | None = None) -> list[InboxItem]:
    """Runs waiting for a human, from Temporal visibility, oldest due first."""
    query = f"ExecutionStatus = 'Running' AND {search.STATUS.name} = 'waiting'"
    if role:
        if not role.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"role '{role}' may hold only letters, digits, '-' and '_'")
        query += f" AND {search.PENDING_ROLES.name} = '{role}'"
    items: list[InboxItem] = []
    async for execution in client.list_workflows(query):
        attrs = execution.typed_search_attributes
        items.append(
            InboxItem(
                workflow_id=execution.id,
                process=attrs.get(search.PROCESS) or execution.workflow_type,
                node=attrs.get(search.NODE) or "",
                roles=list(attrs.get(search.PENDING_ROLES) or []),
                due_at=attrs.get(search.GATE_DUE),
                started_at=execution.start_time,
            )
        )
    far = datetime.max.replace(tzinfo=None)
    return sorted(items, key=lambda i: i.due_at.replace(tzinfo=None) if i.due_at else far)
