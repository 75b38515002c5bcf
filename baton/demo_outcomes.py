"""How the demo's process runs are checked: each sample's run against what
its samples' ``expected.toml`` says, printed the same way for every process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """Where one sample's run ended, against where it should have."""

    sample: str
    workflow_id: str
    expected: str
    reached: str
    note: str

    @property
    def as_expected(self) -> bool:
        return self.reached == self.expected


def print_outcomes(title: str, outcomes: Sequence[Outcome], run_url: Callable[[str], str]) -> None:
    print(f"\n{title}:")
    for outcome in outcomes:
        mark = "as expected" if outcome.as_expected else f"EXPECTED {outcome.expected}"
        print(
            f"{outcome.sample}\n    {outcome.reached} ({mark}): {outcome.note}\n"
            f"    {run_url(outcome.workflow_id)}"
        )


def report_astray(what: str, outcomes: Sequence[Outcome]) -> bool:
    """Say which samples did not end as expected; whether any did not."""
    astray = [outcome.sample for outcome in outcomes if not outcome.as_expected]
    if astray:
        print(f"\n{len(astray)} {what}(s) did not end as expected: {', '.join(astray)}")
    return bool(astray)
