"""Baton's custom search attributes: what the Temporal Web UI and `baton inbox`
filter runs by. They must be registered on the server before a run upserts
them (`baton server` does it at start; docker-compose registers them too).

They change when a run's state does (running, waiting at a gate, escalated,
ended): BatonNode is where the run was at that moment, BatonCostUsd and
BatonMinConfidence the figures so far; `baton status` has the live detail."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PROCESS = SearchAttributeKey.for_keyword("BatonProcess")
NODE = SearchAttributeKey.for_keyword("BatonNode")
STATUS = SearchAttributeKey.for_keyword("BatonStatus")
PENDING_ROLES = SearchAttributeKey.for_keyword_list("BatonPendingRoles")
GATE_DUE = SearchAttributeKey.for_datetime("BatonGateDue")
COST_USD = SearchAttributeKey.for_float("BatonCostUsd")
MIN_CONFIDENCE = SearchAttributeKey.for_float("BatonMinConfidence")

ALL: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    PROCESS,
    NODE,
    STATUS,
    PENDING_ROLES,
    GATE_DUE,
    COST_USD,
    MIN_CONFIDENCE,
)

_CLI_TYPES = {
    "KEYWORD": "Keyword",
    "KEYWORD_LIST": "KeywordList",
    "DATETIME": "Datetime",
    "DOUBLE": "Double",
}


def server_flags() -> list[str]:
    """`temporal server start-dev` flags registering every Baton attribute."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPES[key.indexed_value_type.name]}"]
    return flags
