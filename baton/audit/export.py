"""Exports of the audit trail: lossless JSONL, and one self-contained HTML report.

The HTML report is written for a compliance reviewer who has only the file: inline CSS, no
scripts, no external resources, every recorded value escaped. It states the scope it was
given and never claims compliance: it shows what the trail recorded and whether the chain
verifies.

Each run is told in causal order (what happened before what), every oversight act is in
words (approvals one by one, refusals, overrides as a diff, stops), and per-run checks state
their evidence, so an auditor needs neither the code nor the raw records to follow a run.

This module writes the files; the report's parts live beside it: `export_sections` (the
sections), `oversight` (the acts in words), `checks`, `summaries` (the timeline's lines),
`shown` (recorded values), `causal` (the order), `reading` (what the records mean), and the
`markup` and `wording` both reports share.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from baton.audit.anchor_proof import AnchorProof
from baton.audit.events import AuditRecord
from baton.audit.export_sections import (
    _graph_section,
    _models_table,
    _run_section,
    _scope_section,
    _summary_section,
    _verification_section,
)
from baton.audit.markup import _join, _page, _section, _tag
from baton.audit.reading import _path_of, _runs
from baton.audit.retention import RetentionOverride
from baton.audit.verify import Problem, VerifyReport
from baton.audit.wording import _time

# -- JSONL --------------------------------------------------------------------------------------


def export_jsonl(
    records: Iterable[AuditRecord], out: Path, anchors: Iterable[AnchorProof] = ()
) -> int:
    """One record per line, every field as stored, so `read_jsonl` gives the same records
    and their hashes still recompute outside Baton; then one `{"anchor": ...}` line per
    run, the signed checkpoint and inclusion proof of its chain (`baton audit verify
    --file` checks both, offline)."""
    count = 0
    with out.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            count += 1
        for anchor in anchors:
            fh.write(json.dumps({"anchor": anchor.model_dump(mode="json")}) + "\n")
    return count


def read_export(path: Path) -> tuple[list[str], list[AnchorProof]]:
    """The record lines of a JSONL export, as written, and its anchors."""
    lines: list[str] = []
    anchors: list[AnchorProof] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if line.startswith('{"anchor":'):
                anchors.append(AnchorProof.model_validate(json.loads(line)["anchor"]))
            else:
                lines.append(line.rstrip("\n"))
    return lines, anchors


def read_jsonl(path: Path) -> list[AuditRecord]:
    lines, _ = read_export(path)
    return [AuditRecord.model_validate_json(line) for line in lines]


# -- HTML ---------------------------------------------------------------------------------------


def export_html(
    records: Sequence[AuditRecord],
    report: VerifyReport,
    out: Path,
    *,
    title: str,
    mermaid: str | None = None,
    path_taken: Sequence[str] = (),
    min_retention_days: int | None = None,
    retention_override: RetentionOverride | None = None,
    reconciliations: Mapping[str, Sequence[AuditRecord]] | None = None,
    generated_at: datetime | None = None,
) -> None:
    """Write one self-contained HTML report over the given runs (one section per run).

    `report` should be the verification of the same chains: a run with no problem in it is
    shown as verified. `path_taken` highlights a path on the process graph; with a single run
    and no path given, that run's own recorded path is used. `min_retention_days` is shown as
    the configured minimum, with `retention_override` when one lets it go below the floor.
    `reconciliations` holds each run's reconcile findings (its findings chain, oldest
    first); a run with none is shown as not reconciled yet. `generated_at` pins the stamp
    for reproducible files.
    """
    runs = _runs(records)
    if not path_taken and len(runs) == 1:
        path_taken = [node for node, _ in _path_of(runs[0])]
    problems_by_run: dict[str, list[Problem]] = defaultdict(list)
    for problem in report.problems:
        problems_by_run[problem.workflow_id].append(problem)
    stamp = _time(generated_at or datetime.now(UTC))
    body = _join(
        [
            _tag(
                "header",
                _join([_tag("h1", title), _tag("p", f"Audit trail report · generated {stamp}")]),
                class_="doc",
            ),
            _scope_section(records, runs),
            _verification_section(report),
            _summary_section(records, runs, min_retention_days, retention_override),
            _section("Models used (all runs)", _models_table(records), id_="models"),
            _graph_section(mermaid, path_taken, runs),
            *(
                _run_section(
                    run,
                    problems_by_run.get(run[0].workflow_id, []),
                    i,
                    (reconciliations or {}).get(run[0].workflow_id, []),
                )
                for i, run in enumerate(runs, start=1)
            ),
            _tag(
                "footer",
                "Generated by Baton from its append-only audit store. Hashes: SHA-256 "
                "over canonical JSON, chained per workflow.",
            ),
        ]
    )
    out.write_text(_page(title, body), encoding="utf-8")
