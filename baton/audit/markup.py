"""HTML building blocks of the audit reports (per-run and period): escaping, tags,
tables, the page and its stylesheet, so both look alike and escape alike.

Both reports are files a reviewer opens with nothing else, so every recorded value is escaped
on the way out: text is `_Safe` only once it has been built here.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence


class _Safe(str):
    """Text that is already HTML; everything else is escaped on the way out."""


def _esc(value: object) -> _Safe:
    return value if isinstance(value, _Safe) else _Safe(html.escape(str(value), quote=True))


def _tag(name: str, body: object = "", **attrs: str) -> _Safe:
    rendered = "".join(f' {key.rstrip("_")}="{_esc(val)}"' for key, val in attrs.items() if val)
    return _Safe(f"<{name}{rendered}>{_esc(body)}</{name}>")


def _join(parts: Iterable[object]) -> _Safe:
    return _Safe("".join(_esc(part) for part in parts))


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    class_: str = "",
    foot: Sequence[object] | None = None,
    numeric: Sequence[int] = (),
) -> _Safe:
    def cells(row: Sequence[object], cell: str) -> _Safe:
        return _join(
            _tag(cell, value, class_="num") if i in numeric else _tag(cell, value)
            for i, value in enumerate(row)
        )

    head = _tag("thead", _tag("tr", cells(headers, "th")))
    body = _tag("tbody", _join(_tag("tr", cells(row, "td")) for row in rows))
    tail = _tag("tfoot", _tag("tr", cells(foot, "td"))) if foot else _Safe("")
    return _tag("table", _join([head, body, tail]), class_=class_)


def _noted_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    note: str,
    *,
    class_: str = "",
    numeric: Sequence[int] = (),
) -> _Safe:
    """A table and, under it, what to read it by."""
    return _join([_table(headers, rows, class_=class_, numeric=numeric), _muted(note)])


def _pill(text: str, kind: str) -> _Safe:
    return _tag("span", text, class_=f"pill {kind}")


def _muted(text: str) -> _Safe:
    return _tag("p", text, class_="muted")


def _dl(facts: Iterable[tuple[str, object]], *, class_: str = "") -> _Safe:
    return _tag("dl", _join(_join([_tag("dt", k), _tag("dd", v)]) for k, v in facts), class_=class_)


def _section(title: str, body: object, *, id_: str = "") -> _Safe:
    attrs = {"id": id_} if id_ else {}
    return _tag("section", _join([_tag("h2", title), body]), **attrs)


def _cards(items: Sequence[tuple[str, str]]) -> _Safe:
    """Figures as a row of cards: the value large, its label under it."""
    return _tag(
        "div",
        _join(
            _tag(
                "div",
                _join([_tag("div", value, class_="value"), _tag("div", label, class_="label")]),
                class_="card",
            )
            for label, value in items
        ),
        class_="cards",
    )


_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#d9e2ec; --bg:#f5f7fa; --accent:#243b53;
  --good:#2b8a3e; --good-bg:#ebfbee; --bad:#c92a2a; --bad-bg:#fff5f5; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); line-height:1.45;
  font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 48px; }
header.doc { border-bottom:3px solid var(--accent); margin-bottom:20px; padding-bottom:12px; }
header.doc h1 { margin:0 0 4px; font-size:26px; color:var(--accent); }
header.doc p { margin:0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:8px;
  padding:16px 20px; margin:0 0 18px; }
h2 { font-size:18px; margin:0 0 12px; color:var(--accent); }
h3 { font-size:14px; margin:18px 0 8px; text-transform:uppercase; letter-spacing:.04em;
  color:var(--muted); }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; }
dt { color:var(--muted); } dd { margin:0; font-weight:500; }
dl.facts { grid-template-columns:repeat(3, max-content minmax(0, 1fr)); }
.note { margin:12px 0 0; padding:10px 12px; background:#fff9db; border-left:4px solid #f08c00;
  border-radius:4px; }
.banner { padding:14px 16px; border-radius:6px; font-size:16px; }
.banner.ok { background:var(--good-bg); border:2px solid var(--good); color:var(--good); }
.banner.fail { background:var(--bad-bg); border:2px solid var(--bad); color:var(--bad);
  margin-bottom:12px; }
.banner span { color:var(--ink); font-size:14px; }
.cards { display:grid; grid-template-columns:repeat(5, 1fr); gap:12px; margin:0 0 18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .value { font-size:22px; font-weight:600; color:var(--accent); }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase;
  letter-spacing:.04em; }
table { width:100%; border-collapse:collapse; margin:4px 0 8px; font-size:13px; }
th { text-align:left; background:#f0f4f8; color:var(--muted); font-weight:600;
  border-bottom:2px solid var(--line); padding:6px 8px; }
td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top;
  overflow-wrap:break-word; }
tfoot td { font-weight:600; border-top:2px solid var(--line); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.timeline td:nth-child(-n+4), table.timed td:first-child { white-space:nowrap; }
table.timeline td:last-child { color:var(--muted); }
code { font:12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background:#f0f4f8; padding:10px; border-radius:4px; overflow:auto; font-size:12px; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px;
  font-weight:600; }
.pill.good { background:var(--good-bg); color:var(--good); }
.pill.bad { background:var(--bad-bg); color:var(--bad); }
ol.graph { list-style:none; display:flex; flex-wrap:wrap; align-items:center; gap:8px 0;
  padding:0; margin:4px 0 8px; }
ol.graph li { display:flex; align-items:center; }
ol.graph li + li::before { content:"\\2192"; color:var(--muted); padding:0 8px; font-size:16px; }
.node .box { display:inline-flex; align-items:center; gap:6px; border:1px solid #9fb3c8;
  background:#fff; border-radius:6px; padding:6px 10px; }
.node .box small { color:var(--muted); font-size:11px; text-transform:uppercase; }
.node.taken .box { background:var(--good-bg); border:2px solid var(--good); color:var(--good); }
.node.taken .step { background:var(--good); color:#fff; border-radius:50%; width:20px;
  height:20px; display:inline-flex; align-items:center; justify-content:center;
  font-size:11px; margin-right:4px; }
.node.finished .box { background:var(--good-bg); border-color:var(--good); }
.node.failed .box { background:var(--bad-bg); border-color:var(--bad); }
.node.failed .box small { color:var(--bad); }
.node.skipped .box { background:#f0f4f8; color:var(--muted); border-style:dashed; }
.pill.warn { background:#fff4e6; color:#d9480f; }
.pill.none { background:#f0f4f8; color:var(--muted); }
table.checks td:nth-child(2) { white-space:nowrap; }
table.checks td:first-child { width:32%; font-weight:500; }
ul.evidence, ul.findings { margin:0; padding-left:16px; }
article.act { border:1px solid var(--line); border-left:4px solid var(--line);
  border-radius:6px; padding:8px 14px 10px; margin:10px 0; background:#fbfcfd; }
article.act.good { border-left-color:var(--good); }
article.act.bad { border-left-color:var(--bad); }
article.act.warn { border-left-color:#f08c00; }
article.act header { display:flex; flex-wrap:wrap; align-items:center; gap:4px 12px; }
article.act .when, article.act .seq { color:var(--muted); font-variant-numeric:tabular-nums; }
article.act .role, article.act .gate { font-size:12px; color:var(--muted);
  text-transform:uppercase; letter-spacing:.04em; }
.act-text { margin:8px 0; font-size:14px; }
h4 { font-size:12px; margin:12px 0 4px; color:var(--muted); text-transform:uppercase;
  letter-spacing:.04em; }
table.shown td:first-child { white-space:nowrap; color:var(--muted); width:1%; }
table.shown .field { display:inline-block; padding-left:14px; color:var(--ink);
  font:12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
table.nested { margin:0; font-size:12px; width:auto; }
table.nested td, table.nested th { padding:2px 8px; }
table.diff td:nth-child(2) { background:var(--bad-bg); }
table.diff td:nth-child(3) { background:var(--good-bg); }
.muted { color:var(--muted); }
details summary { cursor:pointer; color:var(--accent); margin-top:8px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
@media print { body { background:#fff; } section { break-inside:avoid-page; } }
"""


def _page(title: str, body: _Safe, extra_css: str = "") -> str:
    """A whole document around ``body``: styles inline, nothing loaded from elsewhere."""
    head = _join(
        [
            _Safe('<meta charset="utf-8">'),
            _Safe('<meta name="viewport" content="width=device-width">'),
            _tag("title", title),
            _tag("style", _Safe(_CSS + extra_css)),
        ]
    )
    page = _tag("html", _join([_tag("head", head), _tag("body", _tag("main", body))]), lang="en")
    return "<!DOCTYPE html>\n" + page
