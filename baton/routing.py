"""Model routing: which provider and model may answer a task, in what order,
at what price, and where its data may go.

The routing file (TOML) declares providers, tiers of candidate models with
their prices, data classes with the residencies they may go to, and per task
a cascade such as ``cheap -> strong -> human``. The workflow plans from a
snapshot of it (:func:`plan_route`), so everything here is pure: no I/O, no
clock. Reading the file and checking API keys happen in `baton.config`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

HUMAN = "human"
ProviderKind = Literal["offline", "openai", "anthropic", "openai_compatible"]


class RoutingError(ValueError):
    """The routing cannot serve a task; the message names the task and the fix."""


class ProviderSpec(BaseModel):
    """How to reach one provider. Keys are never stored: only the name of the
    environment variable that holds one."""

    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    residency: str = "on-prem"
    timeout_s: float = Field(
        default=60.0, gt=0, description="For one request, from when it is sent to its reply"
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight at once from one worker; the others wait for a slot, "
        "heartbeating, without their timeout running. None: no limit",
    )
    queue_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="The longest a request waits for a slot; with timeout_s it bounds the Ask "
        "step's Temporal timeout",
    )
    timeout_retries: int = Field(
        default=1,
        ge=0,
        description="How many times a request that timed out is sent again before the "
        "candidate counts as failed and the cascade moves on",
    )

    @property
    def attempt_timeout_s(self) -> float:
        """A try's Temporal start-to-close timeout: the longest wait for a
        slot, the request, and a margin for reading the document and the reply."""
        return self.queue_timeout_s + self.timeout_s + 30.0


class Candidate(BaseModel):
    provider: str
    model: str
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    # Reasoning models refuse both (400): their candidates set them off.
    temperature: float | None = Field(
        default=0.0, ge=0, description='None ("none" in TOML, which has no null): not sent'
    )
    logprobs: bool = Field(default=True, description="Ask for token log-probabilities")

    @field_validator("temperature", mode="before")
    @classmethod
    def _none_in_toml(cls, value: Any) -> Any:
        return None if value == "none" else value

    @property
    def paid(self) -> bool:
        return self.input_usd_per_mtok > 0 or self.output_usd_per_mtok > 0

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000


class Tier(BaseModel):
    candidates: list[Candidate] = Field(min_length=1)


class DataClass(BaseModel):
    residencies: list[str]


class TaskRoute(BaseModel):
    cascade: list[str] = Field(min_length=1)
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    repair_attempts: int = Field(default=1, ge=0, le=5)
    data_class: str = "internal"
    human_role: str = "reviewer"
    max_tokens: int = Field(default=1024, ge=1, description="The output cap sent with each request")
    human_sla_hours: float | None = Field(
        default=None, gt=0, description="The SLA of the human tier's gate, as a Gate's `sla`"
    )
    human_escalate_to: list[str] = Field(
        default_factory=list, description="Roles the human tier escalates to, as a Gate's"
    )
    tools: list[str] = Field(
        default_factory=list,
        description="Deterministic tools tried, in order, before any model: activity names "
        "of @tool functions the asking node declares (Ask(tools=...)); the first whose "
        "result fits the node's output answers with confidence 1.0 (baton.nodes.tool_tier)",
    )


class RoutingConfig(BaseModel):
    source: str = "defaults"
    budget_usd_per_run: float | None = Field(default=None, ge=0)
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    tiers: dict[str, Tier] = Field(default_factory=dict)
    data_classes: dict[str, DataClass] = Field(default_factory=dict)
    tasks: dict[str, TaskRoute] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_resolve(self) -> RoutingConfig:
        for tier_name, tier in self.tiers.items():
            for candidate in tier.candidates:
                if candidate.provider not in self.providers:
                    raise ValueError(
                        f"tier '{tier_name}' names unknown provider '{candidate.provider}' "
                        f"(declared: {', '.join(sorted(self.providers)) or 'none'})"
                    )
        for task_name, route in self.tasks.items():
            for tier_name in route.cascade:
                if tier_name != HUMAN and tier_name not in self.tiers:
                    raise ValueError(
                        f"task '{task_name}' cascades to unknown tier '{tier_name}' "
                        f"(declared: {', '.join(sorted(self.tiers))}, or '{HUMAN}')"
                    )
            if route.data_class not in self.data_classes:
                raise ValueError(
                    f"task '{task_name}' has unknown data class '{route.data_class}' "
                    f"(declared: {', '.join(sorted(self.data_classes)) or 'none'})"
                )
        return self

    def route(self, task: str) -> TaskRoute:
        route = self.tasks.get(task) or self.tasks.get("default")
        if route is None:
            raise RoutingError(
                f"no route for task '{task}': add [tasks.{task}] (or [tasks.default]) "
                f"to {self.source}"
            )
        return route

    def for_tasks(self, tasks: Collection[str]) -> RoutingConfig:
        """The routing of ``tasks`` alone: their routes (the default's, if one
        of them has none of its own), and the tiers, providers and data
        classes those name. What a run snapshots: the whole file's routes
        were most of its configuration in every run's history."""
        routes = {name: route for name, route in self.tasks.items() if name in tasks}
        if "default" in self.tasks and any(task not in self.tasks for task in tasks):
            routes["default"] = self.tasks["default"]
        tiers = {
            name: tier
            for name, tier in self.tiers.items()
            if any(name in route.cascade for route in routes.values())
        }
        named = {candidate.provider for tier in tiers.values() for candidate in tier.candidates}
        return self.model_copy(
            update={
                "tasks": routes,
                "tiers": tiers,
                "providers": {n: p for n, p in self.providers.items() if n in named},
                "data_classes": {
                    n: c
                    for n, c in self.data_classes.items()
                    if any(route.data_class == n for route in routes.values())
                },
            }
        )

    def providers_in_use(self) -> set[str]:
        used: set[str] = set()
        for route in self.tasks.values():
            for tier_name in route.cascade:
                if tier_name != HUMAN:
                    used |= {c.provider for c in self.tiers[tier_name].candidates}
        return used


class Option(BaseModel):
    """One candidate the workflow may call, with the provider it runs on."""

    tier: str
    candidate: Candidate
    provider: ProviderSpec


class PlannedTier(BaseModel):
    name: str
    options: list[Option]

    @property
    def paid(self) -> bool:
        return any(o.candidate.paid for o in self.options)


class Plan(BaseModel):
    task: str
    route: TaskRoute
    tiers: list[PlannedTier]
    excluded: list[str] = Field(description="Candidates the data class forbids, and why.")


def plan_route(config: RoutingConfig, task: str) -> Plan:
    """The cascade for ``task`` with every candidate its data class forbids
    removed. Fails, before any call, when the data class forbids them all."""
    route = config.route(task)
    allowed = config.data_classes[route.data_class].residencies
    tiers: list[PlannedTier] = []
    excluded: list[str] = []
    for tier_name in route.cascade:
        if tier_name == HUMAN:
            tiers.append(PlannedTier(name=HUMAN, options=[]))
            continue
        options = []
        for candidate in config.tiers[tier_name].candidates:
            provider = config.providers[candidate.provider]
            if provider.residency in allowed:
                options.append(Option(tier=tier_name, candidate=candidate, provider=provider))
            else:
                excluded.append(
                    f"{candidate.provider}/{candidate.model} in tier {tier_name}: residency "
                    f"'{provider.residency}' is not allowed for data class '{route.data_class}' "
                    f"({', '.join(allowed)})"
                )
        if options:
            tiers.append(PlannedTier(name=tier_name, options=options))
    if not any(t.options for t in tiers):
        raise RoutingError(
            f"task '{task}' has data class '{route.data_class}', which may go only to "
            f"{', '.join(allowed)}; no candidate of its cascade ({' -> '.join(route.cascade)}) "
            f"is there. Add a candidate in one of those residencies or change the data class. "
            f"Excluded: {'; '.join(excluded)}"
        )
    return Plan(task=task, route=route, tiers=tiers, excluded=excluded)


AttemptOutcome = Literal[
    "accepted", "accepted_below_minimum", "invalid", "low_confidence", "provider_error"
]


class Attempt(BaseModel):
    """One call to one model, as the workflow saw it."""

    index: int
    tier: str
    provider: str
    model: str
    repair: int = Field(description="0 for a first try, n for the n-th repair")
    outcome: AttemptOutcome
    confidence: float | None = None
    confidence_method: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: list[str] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    notes: list[str] = Field(
        default_factory=list, description="What the model said about its answer"
    )
    response_id: str = Field(default="", description="The provider's id of its response")
    finish_reason: str = Field(default="", description="Why the model stopped: stop, length, ...")
    # Left out while empty: what a gate showed, and its decider signed, for
    # attempts of runs older than the field stays the same.
    raw_reply: str = Field(
        default="",
        description="The model's reply as it came, bounded (baton.llm.prompt.bounded_reply)",
        exclude_if=lambda reply: not reply,
    )
    started_at: datetime
    finished_at: datetime


def routing_table(config: RoutingConfig) -> str:
    """The effective routing, one task per block, for `baton routes`."""
    lines = [f"routing from {config.source}"]
    budget = config.budget_usd_per_run
    lines.append(f"budget per run: {'none' if budget is None else f'${budget:.2f}'}")
    for task, route in sorted(config.tasks.items()):
        allowed = config.data_classes[route.data_class].residencies
        lines.append(
            f"\ntask {task}: data class {route.data_class} (may go to {', '.join(allowed)}), "
            f"min confidence {route.min_confidence:.2f}, repairs {route.repair_attempts}, "
            f"max tokens {route.max_tokens}"
        )
        if route.tools:
            lines.append(f"  0. tools, before any model: {', '.join(route.tools)}")
        for index, tier_name in enumerate(route.cascade, start=1):
            if tier_name == HUMAN:
                sla = route.human_sla_hours
                lines.append(
                    f"  {index}. human: role {route.human_role}"
                    + ("" if sla is None else f", SLA {sla:g}h")
                    + "".join(f" -> {role}" for role in route.human_escalate_to)
                )
                continue
            lines.append(f"  {index}. {tier_name}")
            for candidate in config.tiers[tier_name].candidates:
                provider = config.providers[candidate.provider]
                verdict = "ok" if provider.residency in allowed else "EXCLUDED by data class"
                lines.append(
                    f"     - {candidate.provider}/{candidate.model} ({provider.kind}, "
                    f"{provider.residency}) in ${candidate.input_usd_per_mtok:g}/"
                    f"out ${candidate.output_usd_per_mtok:g} per Mtok: {verdict}"
                )
    return "\n".join(lines)
