"""Business processes, one module each, and the registry the CLI and worker use.

A process is found, not registered: every module in this package that
defines a :class:`~baton.runner.GraphWorkflow` subclass with a
``@workflow.defn`` is one (docs/adding-a-process.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from baton.graph import Graph
from baton.runner import GraphWorkflow


@dataclass(frozen=True)
class Process:
    workflow: type[GraphWorkflow]

    @property
    def graph(self) -> Graph:
        return self.workflow.graph

    @property
    def name(self) -> str:
        return self.graph.name


def _discover() -> dict[str, Process]:
    found: dict[str, Process] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            defined_here = getattr(value, "__module__", None) == module.__name__
            if (
                defined_here
                and isinstance(value, type)
                and issubclass(value, GraphWorkflow)
                and hasattr(value, "__temporal_workflow_definition")
            ):
                process = Process(value)
                if process.name in found:
                    raise ValueError(
                        f"two processes are named '{process.name}' "
                        f"({found[process.name].workflow.__module__} and {module.__name__}): "
                        "a graph's name is its workflow type, and must be unique"
                    )
                found[process.name] = process
    return found


PROCESSES: dict[str, Process] = _discover()


def process(name: str) -> Process:
    try:
        return PROCESSES[name]
    except KeyError:
        raise KeyError(
            f"unknown process '{name}'; known processes: {', '.join(sorted(PROCESSES))}"
        ) from None
