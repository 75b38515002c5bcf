"""BatonPlugin: what a worker or a replayer needs to run Baton processes.

One plugin (``temporalio.plugin.SimplePlugin``) carries it for both, so a
replay runs a history exactly as a worker ran it: the process workflows and
the audit reconciliation, the activities their graphs call (each node kind
names its own, see ``Node.activities``), the audit interceptor (whose
workflow half issues the ``audit_flush`` local activities), the run header
that idempotency keys are made from, tracing, and the sandbox.

    worker = Worker(client, task_queue="baton", plugins=[BatonPlugin(workflows, audit=sink)])
    replayer = Replayer(workflows=[], plugins=[BatonPlugin(workflows)])
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WorkflowSerializationContext,
)
from temporalio.plugin import SimplePlugin
from temporalio.worker import Interceptor, ReplayerConfig, WorkerConfig, WorkflowRunner
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker._workflow_instance import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxMatcher,
    SandboxRestrictions,
)
from temporalio.worker.workflow_sandbox._importer import Importer
from temporalio.worker.workflow_sandbox._runner import _Instance

from activities.agent import agent_turn
from activities.audit import AuditFlush, reconcile_trail
from activities.carry import check_carried_run, seal_carried_run
from activities.config import fixed_run_config, snapshot_run_config
from activities.llm import ask
from activities.notify import notify_reviewers
from baton.audit.interceptors import AuditInterceptor
from baton.audit.reconcile_workflow import AuditReconcile
from baton.audit.sink import AuditSink
from baton.config import RunConfig
from baton.idempotency import IdempotencyInterceptor
from baton.nodes.agent import AGENT_TURN_ACTIVITY
from baton.nodes.ask import ASK_ACTIVITY
from baton.nodes.gate import NOTIFY_ACTIVITY
from baton.runner import GraphWorkflow

# Baton's own modules and the process definitions are deterministic and keep
# no state between runs; importing them once instead of per workflow run
# keeps the sandbox cheap (re-importing workflows/ built and validated every
# graph and its pydantic models again for each run).
OWN_MODULES = ("baton", "activities", "systems", "workflows")
# Passed through by both sandboxes: the tracing interceptor's workflow half
# shares OpenTelemetry's context with the worker, and cryptography's Rust
# core cannot be loaded twice in one process (SystemError when it is).
LIBRARIES = ("opentelemetry", "cryptography")


class _OwnCodeImporter(Importer):
    """Imports Baton's and the processes' modules into the sandbox even
    where a workflow module asks for them to be passed through."""

    def _maybe_passthrough_module(self, name: str) -> types.ModuleType | None:
        if name.partition(".")[0] in OWN_MODULES and not self.module_configured_passthrough(name):
            return None
        return super()._maybe_passthrough_module(name)


# The store context a run answers with when its converter keeps every
# payload in history, which never reads it.
_NO_STORE = StorageDriverStoreContext(target=None)


class _BatonInstance(_Instance):
    # The SDK's private class (temporalio is pinned in constraints.txt):
    # tests/test_strict_sandbox.py and tests/test_plugin.py fail if an
    # upgrade changes it.
    def __init__(self, details: WorkflowInstanceDetails, runner: BatonSandbox) -> None:
        self._runner = runner  # before the base class imports the workflow
        super().__init__(details, runner.runner_class, runner.restrictions)

    def _create_instance(self) -> None:
        if self._runner.strict:
            self.importer.__class__ = _OwnCodeImporter
        super()._create_instance()

    # The SDK enters the sandbox by executing a line of source, which Python
    # compiled again at every activation; the few distinct lines are compiled once.
    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(_compiled(code), **extra_globals)  # type: ignore[arg-type]

    # The SDK asks the run for the payload's serialization context before
    # every payload it encodes or decodes, entering the sandbox each time
    # (its imports swapped in, a line of code executed): about 80 times a
    # run, a tenth of an intake worker's CPU. A context-free converter uses
    # neither answer, so a runner that knows its converter is one answers
    # without entering.
    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> SerializationContext | None:
        if self._runner.context_free:
            return None
        return super().get_serialization_context(command_info)

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        if self._runner.context_free:
            return _NO_STORE
        return super().get_external_store_context(command_info)


@functools.cache
def _compiled(source: str) -> types.CodeType:
    return compile(source, "<string>", "exec")


@dataclasses.dataclass(frozen=True)
class BatonSandbox(SandboxedWorkflowRunner):
    """The SDK's sandbox, ``strict`` (see STRICT_SANDBOX) or not, and
    ``context_free`` once BatonPlugin has seen that the worker's data
    converter takes no serialization context and stores no payload
    elsewhere (see :func:`context_free`)."""

    strict: bool = False
    context_free: bool = False

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _BatonInstance(det, self)


def context_free(converter: DataConverter) -> bool:
    """Whether ``converter`` encodes and decodes every payload the same way
    whatever workflow or activity it belongs to, and keeps payloads in
    history: no part of it takes a serialization context (``with_context``
    gives the converter itself back) and it has no external storage.
    Baton's converter (baton.codec) is; a codec whose key depends on the
    workflow would not be, and its runs keep the SDK's lookups."""
    workflow = WorkflowSerializationContext(namespace="default", workflow_id="probe")
    activity = ActivitySerializationContext(
        namespace="default",
        workflow_id="probe",
        workflow_type="probe",
        activity_type="probe",
        activity_task_queue="probe",
        is_local=False,
        activity_id="1",
    )
    return converter.external_storage is None and all(
        converter.with_context(context) is converter for context in (workflow, activity)
    )


SANDBOX = BatonSandbox(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*OWN_MODULES, *LIBRARIES)
)

# The strict sandbox checks what SANDBOX trusts. Nothing of Baton or of the
# processes passes through, not even inside a workflow module's
# `workflow.unsafe.imports_passed_through()`: every run imports it all again
# in its sandbox, where a wall-clock read, a random number or I/O (a when=
# predicate's datetime.now()) fails the workflow task with a
# RestrictedWorkflowAccessError, and a workflow that imports systems/, even
# through an activity module, fails to load. Each run pays for it (about a
# second of CPU a run), so only `make test` runs the workflow tests under it.
STRICT_SANDBOX_ENV = "BATON_STRICT_SANDBOX"
# The exceptions: the audit interceptor's workflow half is made outside the
# sandbox and records into the run's trail, so Trail and Actor must be the
# same classes on both sides of the wall; and this module, the worker's
# assembly, which runs no workflow code but which a test module that
# declares a workflow imports.
CROSSING = ("baton.audit.trail", "baton.audit.events", __name__)
STRICT_SANDBOX = BatonSandbox(
    restrictions=dataclasses.replace(
        SandboxRestrictions.default.with_passthrough_modules(*LIBRARIES, *CROSSING),
        invalid_modules=SandboxMatcher(children={"systems": SandboxMatcher.all}),
    ),
    strict=True,
)


def _for_converter(runner: WorkflowRunner, converter: DataConverter) -> WorkflowRunner:
    """``runner``, answering serialization contexts itself if it is a
    BatonSandbox and ``converter`` takes none."""
    if isinstance(runner, BatonSandbox) and context_free(converter):
        return dataclasses.replace(runner, context_free=True)
    return runner


def strict_sandbox_requested() -> bool:
    """Whether BATON_STRICT_SANDBOX asks for the strict sandbox (set, not 0)."""
    return os.environ.get(STRICT_SANDBOX_ENV, "") not in ("", "0")


def sandbox(*, strict: bool | None = None) -> BatonSandbox:
    """STRICT_SANDBOX if ``strict`` (None: if BATON_STRICT_SANDBOX asks for
    it), else SANDBOX."""
    return STRICT_SANDBOX if (strict_sandbox_requested() if strict is None else strict) else SANDBOX


# The activities node kinds name rather than hold (see Node.activities).
_BATON_ACTIVITIES: dict[str, Callable[..., Any]] = {
    ASK_ACTIVITY: ask,
    AGENT_TURN_ACTIVITY: agent_turn,
    NOTIFY_ACTIVITY: notify_reviewers,
}


def graph_activities(workflows: Sequence[type[GraphWorkflow]]) -> list[Callable[..., Any]]:
    """Every activity the graphs of ``workflows`` call, each once, with the
    configuration snapshot every run takes, the seal of a run carried into a
    fresh history (baton.carry) and the audit reconciliation's."""
    called = [
        _BATON_ACTIVITIES[ref] if isinstance(ref, str) else ref
        for cls in workflows
        for node in cls.graph.nodes
        for ref in node.activities()
    ]
    return list(
        dict.fromkeys(
            [snapshot_run_config, seal_carried_run, check_carried_run, *called, reconcile_trail]
        )
    )


class BatonPlugin(SimplePlugin):
    """Runs ``workflows`` (Baton processes) on a worker or a replayer.

    ``audit`` is where the worker's audit events go (None: nowhere, for a
    replayer or a benchmark of the audit's cost). ``run_config`` replaces
    the configuration files a run snapshots at start (a callable is asked
    at each start). ``traced`` adds OpenTelemetry spans unless the worker's
    client traces already (a worker takes on its client's interceptors, and
    two made every span twice). ``data_converter`` is the replayer's; a
    worker uses its client's. ``strict_sandbox`` runs them in
    STRICT_SANDBOX (None: if BATON_STRICT_SANDBOX asks for it)."""

    def __init__(
        self,
        workflows: Sequence[type[GraphWorkflow]],
        *,
        audit: AuditSink | None = None,
        run_config: RunConfig | Callable[[], RunConfig] | None = None,
        traced: bool = True,
        data_converter: DataConverter | None = None,
        strict_sandbox: bool | None = None,
    ) -> None:
        activities = graph_activities(workflows)
        if run_config is not None:
            snapshot = fixed_run_config(run_config)
            activities = [snapshot if a is snapshot_run_config else a for a in activities]
        activities.append(AuditFlush(audit).flush)
        self._audit = AuditInterceptor(audit)
        # Idempotency keys name the run's first execution (baton.idempotency).
        self._run_header = IdempotencyInterceptor()
        self._traced = traced
        super().__init__(
            "baton",
            data_converter=data_converter,
            workflows=[*workflows, AuditReconcile],
            # A worker given some of these too (a test's own process) registers each once.
            activities=lambda given: list(dict.fromkeys([*activities, *(given or [])])),
            workflow_runner=sandbox(strict=strict_sandbox),
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        if runner := config.get("workflow_runner"):
            config["workflow_runner"] = _for_converter(runner, config["client"].data_converter)
        own: list[Interceptor] = [self._audit, self._run_header]
        inherited = config["client"].config()["interceptors"]
        if self._traced and not any(isinstance(i, TracingInterceptor) for i in inherited):
            # Spans for every run, whether or not the starter traced its call.
            own.append(TracingInterceptor(always_create_workflow_spans=True))
        config["interceptors"] = [*own, *config.get("interceptors", [])]
        return config

    def configure_replayer(self, config: ReplayerConfig) -> ReplayerConfig:
        config = super().configure_replayer(config)
        if runner := config.get("workflow_runner"):
            converter = config.get("data_converter", DataConverter.default)
            config["workflow_runner"] = _for_converter(runner, converter)
        config["interceptors"] = [self._audit, self._run_header, *config.get("interceptors", [])]
        return config
