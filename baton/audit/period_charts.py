"""The period report's charts, drawn by matplotlib as inline SVG: headless, text kept as
text, element ids made unique per chart, and the same figures always give the same file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import TypeVar

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from baton.audit.markup import _Safe
from baton.audit.period_stats import ModelWeek, PeriodStats
from baton.audit.period_summary import DISPOSITIONS, VERDICTS, Disposition, Verdict
from baton.audit.wording import _span

# Headless: the CLI, a worker or CI has no display, and a report never opens a window.
matplotlib.use("Agg")

_MUTED, _GRID = "#616e7c", "#d9e2ec"

_DISPOSITION_COLOURS: dict[Disposition, str] = {
    "auto-entered": "#2b8a3e",
    "reviewed": "#1c7ed6",
    "rejected": "#f08c00",
    "stopped": "#c92a2a",
    "failed": "#862e9c",
    "no end": "#adb5bd",
}
_VERDICT_COLOURS: dict[Verdict, str] = {
    "approved unchanged": "#2b8a3e",
    "overridden": "#f08c00",
    "rejected": "#c92a2a",
    "changes requested": "#1c7ed6",
}
_Name = TypeVar("_Name", bound=str)
_SERIES = ("#1c7ed6", "#f08c00", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285", "#5c940d")


def _axes(width: float = 7.6, height: float = 2.9) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    axes.spines[["left", "bottom"]].set_color(_GRID)
    axes.tick_params(colors=_MUTED, labelsize=8)
    axes.grid(axis="y", color=_GRID, linewidth=0.6)
    axes.set_axisbelow(True)
    return figure, axes


# No RDF block (it names schema URLs) and no date: the same trail gives the same file.
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def _svg(figure: Figure, name: str) -> _Safe:
    """The figure as an `<svg>` element to put inline. Text stays text, escaped by
    matplotlib's SVG writer. Several charts share one page, so every element id and every
    reference to one gets the chart's name; the fixed salt keeps the file the same from one
    run to the next."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "baton"}):
        figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]
    for before, after in (('id="', f'id="{name}-'), ("url(#", f"url(#{name}-")):
        svg = svg.replace(before, after)
    return _Safe(svg.replace('href="#', f'href="#{name}-'))


def _label(text: str, limit: int = 48) -> str:
    """Recorded text as a chart label: never read as mathtext (a `$` in a model name)."""
    clipped = text if len(text) <= limit else text[: limit - 1] + "…"
    return clipped.replace("$", r"\$")


def _week_axis(axes: Axes, weeks: Sequence[date]) -> None:
    every = max(1, len(weeks) // 16)
    axes.set_xticks(range(len(weeks)))
    axes.set_xticklabels(
        [f"{w:%d %b}" if i % every == 0 else "" for i, w in enumerate(weeks)], rotation=0
    )
    axes.set_xlabel("week starting (UTC)", color=_MUTED, fontsize=8)


def _legend(axes: Axes) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _stacked(
    axes: Axes,
    weeks: Sequence[date],
    series: Mapping[_Name, Sequence[float]],
    colours: Mapping[_Name, str],
) -> None:
    bottom = [0.0] * len(weeks)
    for name, values in series.items():
        if not any(values):
            continue
        axes.bar(
            range(len(weeks)), values, 0.7, bottom=bottom, label=_label(name), color=colours[name]
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    _week_axis(axes, weeks)
    _legend(axes)


def volume_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    weeks = [w.week for w in stats.volume]
    series = {d: [float(w.runs[d]) for w in stats.volume] for d in DISPOSITIONS}
    _stacked(axes, weeks, series, _DISPOSITION_COLOURS)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("runs started", color=_MUTED, fontsize=8)
    return _svg(figure, "volume")


def agreement_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes(height=1.9)
    total = stats.reviewed_decisions or 1
    names = list(reversed(VERDICTS))
    counts = [stats.verdicts[v] for v in names]
    bars = axes.barh(names, counts, color=[_VERDICT_COLOURS[v] for v in names], height=0.6)
    axes.bar_label(bars, [f"{c} ({c / total:.0%})" for c in counts], fontsize=8, padding=3)
    axes.grid(axis="y", visible=False)
    axes.grid(axis="x", color=_GRID, linewidth=0.6)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("final decisions by a person", color=_MUTED, fontsize=8)
    return _svg(figure, "agreement")


def decision_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    colours = ["#c92a2a" if b.fast else "#1c7ed6" for b in stats.histogram]
    axes.bar(range(len(stats.histogram)), [b.count for b in stats.histogram], 0.8, color=colours)
    axes.set_xticks(range(len(stats.histogram)))
    axes.set_xticklabels([b.label for b in stats.histogram], rotation=30, ha="right")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("decisions", color=_MUTED, fontsize=8)
    axes.set_xlabel(
        f"time from the gate opening to the decision (red: under {_span(stats.fast_seconds)})",
        color=_MUTED,
        fontsize=8,
    )
    return _svg(figure, "decisions")


def sla_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    weeks = [w.week for w in stats.gates]
    nan = float("nan")  # a week without gates has no rate: a gap in the line, not a zero
    escalated = [w.escalated / w.opened if w.opened else nan for w in stats.gates]
    breached = [w.breached / w.opened if w.opened else nan for w in stats.gates]
    for name, colour, rates in (
        ("escalated", "#f08c00", escalated),
        ("SLA breached", "#c92a2a", breached),
    ):
        axes.plot(range(len(weeks)), rates, marker="o", color=colour, label=name, linewidth=1.5)
    axes.set_ylim(0, 1.05)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylabel("of gates opened that week", color=_MUTED, fontsize=8)
    _week_axis(axes, weeks)
    _legend(axes)
    return _svg(figure, "sla")


def _by_model(stats: PeriodStats, value: Callable[[ModelWeek], float]) -> dict[str, list[float]]:
    weeks = [w.week for w in stats.volume]
    series: dict[str, list[float]] = {}
    for use in stats.models:
        values = series.setdefault(use.model, [float("nan")] * len(weeks))
        values[weeks.index(use.week)] = value(use)
    return series


def cost_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    series = {
        model: [0.0 if v != v else v for v in values]  # NaN: no call that week, no cost
        for model, values in _by_model(stats, lambda use: use.cost_usd).items()
    }
    colours = {model: _SERIES[i % len(_SERIES)] for i, model in enumerate(series)}
    _stacked(axes, [w.week for w in stats.volume], series, colours)
    axes.set_ylabel("cost (USD)", color=_MUTED, fontsize=8)
    return _svg(figure, "cost")


def confidence_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    series = _by_model(stats, lambda use: use.confidence_mean or float("nan"))
    for i, (model, values) in enumerate(series.items()):
        axes.plot(
            range(len(values)),
            values,
            marker="o",
            linewidth=1.5,
            color=_SERIES[i % len(_SERIES)],
            label=_label(model),
        )
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("mean confidence", color=_MUTED, fontsize=8)
    _week_axis(axes, [w.week for w in stats.volume])
    _legend(axes)
    return _svg(figure, "confidence")
