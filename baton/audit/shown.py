"""Recorded values as HTML: what a decider was shown (documents, findings, the AI output
and its attempts) and what an override changed, field by field. Nested values become nested
tables two levels deep, then text, so a reviewer reads the data without reading JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from baton.audit.markup import _esc, _join, _muted, _noted_table, _Safe, _table, _tag
from baton.audit.reading import (
    _ai_fields,
    _confidence,
    _flatten,
    _is_ai_output,
    _model_of,
    field_diff,
)
from baton.audit.wording import _clip, _short
from baton.gates import reasons_of


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _clip(str(value), 600)


def _value_cell(value: Any, depth: int = 0) -> _Safe:
    """A recorded value for a table cell: nested tables two levels deep, text below."""
    if value is None:
        return _tag("span", "—", class_="muted")
    if isinstance(value, Mapping):
        if not value:
            return _tag("span", "none", class_="muted")
        if depth >= 2:
            return _esc(_short(value, 300))
        rows = [[key, _value_cell(val, depth + 1)] for key, val in value.items()]
        return _tag("table", _tag("tbody", _rows(rows)), class_="nested")
    if isinstance(value, list | tuple):
        return _list_cell(list(value), depth)
    return _esc(_scalar(value))


def _rows(rows: Iterable[Sequence[object]]) -> _Safe:
    return _join(_tag("tr", _join(_tag("td", cell) for cell in row)) for row in rows)


def _list_cell(items: list[Any], depth: int) -> _Safe:
    if not items:
        return _tag("span", "none", class_="muted")
    if all(isinstance(item, Mapping) for item in items) and depth < 2:
        columns: list[str] = []
        for item in items:
            columns += [str(key) for key in item if str(key) not in columns]
        return _table(
            ["#", *columns],
            (
                [i, *(_value_cell(item.get(c), depth + 1) for c in columns)]
                for i, item in enumerate(items, 1)
            ),
            class_="nested",
        )
    if all(not isinstance(item, Mapping | list | tuple) for item in items):
        return _esc(_clip(", ".join(_scalar(item) for item in items), 600))
    return _tag("ol", _join(_tag("li", _value_cell(item, depth + 1)) for item in items))


def _is_document(value: Any) -> bool:
    return isinstance(value, Mapping) and {"sha256", "name"} <= set(value)


def _document_cell(ref: Mapping[str, Any]) -> _Safe:
    parts: list[object] = [_tag("b", ref.get("name", "?"))]
    if isinstance(ref.get("size"), int):
        parts.append(f" · {ref['size']:,} bytes")
    if ref.get("media_type"):
        parts.append(f" · {ref['media_type']}")
    parts.append(_join([" · sha256 ", _tag("code", f"{str(ref.get('sha256'))[:16]}…")]))
    return _join(parts)


def _findings_cell(value: Any) -> _Safe:
    if not value:
        return _esc("none")
    if not isinstance(value, list):
        return _value_cell(value)
    return _tag("ul", _join(_tag("li", _finding(item)) for item in value), class_="findings")


def _finding(item: Any) -> _Safe:
    if isinstance(item, Mapping) and "message" in item:
        code = item.get("code")
        return _join([*([_tag("code", code), ": "] if code else []), item["message"]])
    return _value_cell(item, 1)


def _output_rows(output: Any) -> list[list[object]]:
    if not isinstance(output, Mapping):
        return [[_tag("span", "output", class_="field"), _value_cell(output)]]
    return [[_tag("span", key, class_="field"), _value_cell(val)] for key, val in output.items()]


def _shown_rows(key: str, value: Any) -> list[list[object]]:
    if _is_document(value):
        label = "Document" if key == "document" else f"Document ({key})"
        return [[label, _document_cell(value)]]
    if key == "findings":
        return [["Findings", _findings_cell(value)]]
    if _is_ai_output(value):
        return [
            [f"AI output of {value.get('node', key)}", _model_of(value)],
            ["Confidence", _confidence(value)],
            *_output_rows(value.get("output")),
        ]
    if key == "proposed":
        if value is None:
            return [["AI proposal", "none: no model gave a valid answer"]]
        return [["AI proposal", "the best answer the models gave"], *_output_rows(value)]
    if key == "attempts" and isinstance(value, list):
        return [["Model attempts", _attempts_cell(value)]]
    if key == "why":
        reasons = reasons_of({"why": value})
        return [["Why a person decides", _tag("ul", _join(_tag("li", r) for r in reasons))]]
    return [[key, _value_cell(value)]]


def _attempts_cell(attempts: list[Any]) -> _Safe:
    rows = [
        [
            a.get("index", i),
            _model_of(a),
            a.get("outcome", "—"),
            _confidence(a),
            _short(a.get("errors") or "—", 200),
        ]
        for i, a in enumerate(attempts, 1)
        if isinstance(a, Mapping)
    ]
    return _table(["#", "Model", "Outcome", "Confidence", "Errors"], rows, class_="nested")


def _shown_table(shown: Any) -> _Safe:
    """What a decider was shown, as the run recorded it when they decided."""
    if shown is None or shown == "":
        return _muted("The record does not say what was shown.")
    if not isinstance(shown, Mapping):
        return _tag("p", _clip(str(shown), 600))
    rows = [row for key, value in shown.items() for row in _shown_rows(str(key), value)]
    return _table(["Shown", "Value"], rows, class_="shown")


def _diff_cell(value: Any) -> _Safe:
    return _tag("span", "(empty)", class_="muted") if value is None else _value_cell(value)


def _diff_table(data: Mapping[str, Any]) -> _Safe:
    if not isinstance(data.get("edited_output"), Mapping):
        return _muted("The record holds no edited output, so no field-by-field diff.")
    changes = field_diff(data.get("ai_output"), data["edited_output"])
    if not changes:
        return _muted("The edited output equals the AI output in every field.")
    total = len(_flatten(_ai_fields(data.get("ai_output"))))
    rows = [[_tag("code", path), _diff_cell(a), _diff_cell(b)] for path, a, b in changes]
    kept = max(total - len(changes), 0)
    return _noted_table(
        ["Field", "AI value", "Reviewer's value"],
        rows,
        f"{len(changes)} field(s) changed; the other {kept} kept.",
        class_="diff",
    )
