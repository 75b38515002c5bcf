"""A routing configuration pointing at the scripted LLM server, and replies
to script: shared by the routing and durability tests."""

from __future__ import annotations

from typing import Any

from baton.config import RunConfig, load_run_config
from baton.routing import Candidate, DataClass, ProviderSpec, RoutingConfig, TaskRoute, Tier
from tests.conftest import SAMPLES
from tests.fake_llm import ScriptedLLMServer

KEY_ENV = "BATON_TEST_OPENAI_KEY"
DOC = SAMPLES / "invoice-acme-2026-0142.txt"
VALID = {
    "doc_type": "invoice",
    "number": "INV-1",
    "issue_date": "2026-03-01",
    "due_date": "2026-03-31",
    "party": "Acme",
    "currency": "EUR",
    "line_items": [{"description": "Work", "quantity": 2, "unit_price": 50, "amount": 100}],
    "subtotal": 100,
    "tax": 20,
    "total": 120,
}
OFF_SCHEMA = {"doc_type": "memo", "total": "a lot"}
SURE = [-0.01, -0.02, -0.01]  # token log-probabilities of a confident reply
UNSURE = [-1.5, -2.0, -1.0]


def answer(output: dict[str, Any], confidence: float = 0.95) -> dict[str, Any]:
    return {"answer": output, "confidence": confidence}


def config(
    server: ScriptedLLMServer,
    *,
    cascade: list[str],
    min_confidence: float = 0.8,
    repairs: int = 1,
    data_class: str = "internal",
    budget: float | None = 1.0,
    timeout_s: float = 30.0,
) -> RunConfig:
    routing = RoutingConfig(
        source="test",
        budget_usd_per_run=budget,
        providers={
            "openai": ProviderSpec(
                kind="openai",
                base_url=server.openai_base_url,
                api_key_env=KEY_ENV,
                residency="us",
                timeout_s=timeout_s,
            ),
            "anthropic": ProviderSpec(
                kind="anthropic",
                base_url=server.anthropic_base_url,
                api_key_env=KEY_ENV,
                residency="eu",
            ),
            "vllm": ProviderSpec(
                kind="openai_compatible", base_url=server.openai_base_url, residency="on-prem"
            ),
        },
        tiers={
            "cheap": Tier(
                candidates=[
                    Candidate(
                        provider="openai",
                        model="gpt-cheap",
                        input_usd_per_mtok=0.15,
                        output_usd_per_mtok=0.60,
                    )
                ]
            ),
            "strong": Tier(
                candidates=[
                    Candidate(
                        provider="anthropic",
                        model="claude-strong",
                        input_usd_per_mtok=3.0,
                        output_usd_per_mtok=15.0,
                    )
                ]
            ),
            "local": Tier(candidates=[Candidate(provider="vllm", model="llama-local")]),
        },
        data_classes={
            "internal": DataClass(residencies=["on-prem", "eu", "us"]),
            "pii": DataClass(residencies=["on-prem"]),
        },
        tasks={
            "extract_fields": TaskRoute(
                cascade=cascade,
                min_confidence=min_confidence,
                repair_attempts=repairs,
                data_class=data_class,
            )
        },
    )
    return load_run_config().model_copy(update={"routing": routing})
