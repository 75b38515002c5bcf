"""Business processes, one module each, and the registry the CLI and worker use."""

from __future__ import annotations

from dataclasses import dataclass

from baton.graph import Graph
from baton.runner import GraphWorkflow
from workflows.document_intake import DocumentIntake


@dataclass(frozen=True)
class Process:
    workflow: type[GraphWorkflow]

    @property
    def graph(self) -> Graph:
        return self.workflow.graph

    @property
    def name(self) -> str:
        return self.graph.name


PROCESSES: dict[str, Process] = {p.name: p for p in (Process(DocumentIntake),)}


def process(name: str) -> Process:
    try:
        return PROCESSES[name]
    except KeyError:
        raise KeyError(
            f"unknown process '{name}'; known processes: {', '.join(sorted(PROCESSES))}"
        ) from None
