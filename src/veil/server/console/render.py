"""What a reviewer reads: bundle code highlighted, output previews, risk hints.

Everything here turns bytes the workload (or its submitter) chose into HTML, so everything
is escaped: Pygments escapes the code it highlights, and previews are plain strings that the
autoescaping templates escape. Markdown cells are shown as text, never rendered as HTML.
The hints are facts the server measures on the output itself; they point a reviewer at what
to look at and decide nothing (the gate's decision stands).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, JsonLexer, PythonLexer, TextLexer

PREVIEW_ROWS = 10
PREVIEW_MAX_BYTES = 32 * 1024**2  # larger outputs are not decrypted for a page view
MAX_CELL_CHARS = 80
MAX_TEXT_CHARS = 4000
_FORMATTER = HtmlFormatter(cssclass="hl", nowrap=False)


def pygments_css() -> str:
    return str(_FORMATTER.get_style_defs(".hl"))


@dataclass(frozen=True)
class Cell:
    kind: str  # "code", "markdown", "raw"
    html: Markup


@dataclass(frozen=True)
class BundleFile:
    path: str
    size: int
    cells: list[Cell]


def _code(text: str, lexer: Any) -> Markup:
    # Pygments escapes &, <, >, " and ' in every token: the result is safe HTML.
    return Markup(highlight(text, lexer, _FORMATTER))


def render_bundle(files: Mapping[str, bytes]) -> list[BundleFile]:
    """Every bundle file as highlighted cells; the entrypoint's notebook cell by cell."""
    rendered: list[BundleFile] = []
    for path in sorted(files):
        data = files[path]
        text = data.decode("utf-8", errors="replace")
        cells: list[Cell]
        if path.endswith(".ipynb"):
            cells = _notebook_cells(text)
        elif path.endswith(".py"):
            cells = [Cell("code", _code(text, PythonLexer()))]
        elif path.endswith(".json"):
            cells = [Cell("code", _code(_pretty_json(text), JsonLexer()))]
        else:
            cells = [Cell("raw", _code(text, TextLexer()))]
        rendered.append(BundleFile(path, len(data), cells))
    return rendered


def bundle_diff(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> Markup | None:
    """A unified diff of two bundles' code (notebooks cell by cell), highlighted and escaped;
    None when nothing changed."""
    import difflib

    lines: list[str] = []
    for path in sorted(set(old) | set(new)):
        before = _source_lines(path, old.get(path))
        after = _source_lines(path, new.get(path))
        lines += difflib.unified_diff(before, after, f"approved/{path}", f"this job/{path}",
                                      lineterm="", n=2)
    if not lines:
        return None
    return _code("\n".join(lines) + "\n", DiffLexer())


def _source_lines(path: str, data: bytes | None) -> list[str]:
    if data is None:
        return []
    text = data.decode("utf-8", errors="replace")
    if path.endswith(".ipynb"):
        try:
            cells = json.loads(text)["cells"]
            return [line for i, cell in enumerate(cells) for line in
                    [f"# --- {cell['cell_type']} cell {i + 1} ---",
                     *str(cell.get("source", "")).splitlines()]]
        except (ValueError, KeyError, TypeError):
            pass
    if path.endswith(".json"):
        text = _pretty_json(text)
    return text.splitlines()


def _notebook_cells(text: str) -> list[Cell]:
    try:  # stored bundles are normalised notebooks (see `jobs.bundle.normalise_notebook`)
        doc = json.loads(text)
        raw_cells = [(str(c["cell_type"]), str(c.get("source", ""))) for c in doc["cells"]]
    except (ValueError, KeyError, TypeError):
        return [Cell("raw", _code(text, TextLexer()))]
    return [Cell(kind, _code(source, PythonLexer() if kind == "code" else TextLexer()))
            for kind, source in raw_cells]


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        return text


@dataclass(frozen=True)
class InputFacts:
    """What the job's input policies say that bears on a reviewer's reading of a table."""

    id_columns: frozenset[str] = frozenset()
    min_group_size: int | None = None


@dataclass
class Preview:
    kind: str  # "table", "json", "figure", "model", "none"
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    shape: tuple[int, int] | None = None
    text: str | None = None
    hints: list[str] = field(default_factory=list)


def preview(kind: str, media_type: str, data: bytes, meta: Mapping[str, Any],
            facts: InputFacts) -> Preview:
    """A reviewer's preview of one output's bytes (decrypted by the caller, who may read them)."""
    hints = [str(meta["risk"])] if meta.get("risk") else []
    if media_type == "application/vnd.apache.parquet":
        return _table(data, meta, facts, hints)
    if media_type == "application/json":
        return _json(data, hints)
    if media_type == "image/png":
        hints.append("a figure can plot individual records (a scatter of every patient is "
                     "row-level data): release only plots of aggregates")
        return Preview("figure", hints=hints)
    if kind == "model":
        return Preview("model", hints=hints + _model_hints(meta))
    return Preview("none", hints=hints)


def _table(data: bytes, meta: Mapping[str, Any], facts: InputFacts,
           hints: list[str]) -> Preview:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception:
        return Preview("none", hints=[*hints, "the file is not a readable Parquet table"])
    head = table.slice(0, PREVIEW_ROWS).to_pylist()
    columns = list(table.column_names)
    rows = [[_cell(row.get(c)) for c in columns] for row in head]
    n = table.num_rows
    for name in columns:
        if name in facts.id_columns:
            hints.append(f"column {name!r} is an input's privacy-unit id or join key: "
                         "each row may be one person")
            continue
        column = table.column(name)
        distinct = int(pc.count_distinct(column).as_py()) if n else 0
        if n >= 20 and distinct == n and not _is_float(column.type):
            hints.append(f"column {name!r} has a different value on every one of the {n} "
                         "rows: a row-level key?")
        elif n >= 20 and distinct > n // 2 and not _is_float(column.type):
            hints.append(f"column {name!r} is high-cardinality ({distinct} distinct values "
                         f"in {n} rows)")
    if n >= 100:
        hints.append(f"{n} rows: tables this long are often row-level, not aggregates")
    smallest = meta.get("smallest_group_claimed")
    if isinstance(smallest, int) and facts.min_group_size and smallest < facts.min_group_size \
            and not meta.get("risk"):
        hints.append(f"smallest group {smallest} is below the minimum {facts.min_group_size}")
    return Preview("table", columns, rows, (n, len(columns)), hints=hints)


def _is_float(kind: Any) -> bool:
    import pyarrow.types as pt

    return bool(pt.is_floating(kind))


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"


def _json(data: bytes, hints: list[str]) -> Preview:
    try:
        doc = json.loads(data)
    except ValueError:
        return Preview("none", hints=[*hints, "the file is not valid JSON"])
    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + "\n… (truncated)"
    longest = _longest_list(doc)
    if longest >= 20:
        hints.append(f"holds a list of {longest} values: per-record values?")
    return Preview("json", text=text, hints=hints)


def _longest_list(doc: Any) -> int:
    if isinstance(doc, list):
        return max([len(doc), *(_longest_list(x) for x in doc)])
    if isinstance(doc, dict):
        return max([0, *(_longest_list(x) for x in doc.values())])
    return 0


def _model_hints(meta: Mapping[str, Any]) -> list[str]:
    hints = []
    advantage = meta.get("mia_advantage") or meta.get("advantage")
    if isinstance(advantage, int | float) and advantage > 0.1:
        hints.append(f"membership-inference advantage {advantage:.3f}: the model may "
                     "memorise training records")
    if meta.get("audit_skipped"):
        hints.append(f"no membership audit: {meta['audit_skipped']}")
    return hints


def facts_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The gate's and executor's measured facts, flattened for a definition list."""
    rows = []
    for key in sorted(meta):
        value = meta[key]
        if isinstance(value, dict | list):
            value = json.dumps(value, sort_keys=True, default=str)
        text = str(value)
        rows.append((key, text if len(text) <= 400 else text[:399] + "…"))
    return rows


def input_facts(policies: Sequence[Any]) -> InputFacts:
    """From the job's input policies (`DatasetPolicy`): id columns and the strictest k."""
    ids: set[str] = set()
    sizes = []
    for policy in policies:
        if policy.privacy_unit is not None:
            ids.add(policy.privacy_unit.id_column)
        ids.update(policy.join_keys)
        sizes.append(policy.min_group_size)
    return InputFacts(frozenset(ids), max(sizes) if sizes else None)


def budget_chart(charges: Sequence[tuple[str, float]], total: float, *, width: int = 360,
                 height: int = 90) -> Markup:
    """Epsilon charged over time as a small inline SVG (no script, no inline style).

    `charges` are (ISO time, epsilon) oldest first; the line is their running sum, which is
    the spend under basic composition (a zCDP ledger may have spent less), against `total`.
    """
    top = max(total, sum(e for _, e in charges), 1e-9)
    n = len(charges)
    points = [(0.0, float(height))]
    running = 0.0
    for i, (_, epsilon) in enumerate(charges):
        x = width * (i + 1) / max(n, 1)
        points.append((x, points[-1][1]))
        running += epsilon
        points.append((x, height - height * running / top))
    limit_y = height - height * total / top
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    label = f"{running:.3g} of {total:.3g} epsilon charged in {n} charge{'s' * (n != 1)}"
    svg = (f'<svg class="budget" viewBox="0 0 {width} {height + 2}" width="{width}" '
           f'height="{height + 2}" role="img" aria-label="{label}">'
           f'<line x1="0" y1="{limit_y:.1f}" x2="{width}" y2="{limit_y:.1f}" stroke="#b42318" '
           'stroke-dasharray="4 3"/>'
           f'<polyline points="{path}" fill="none" stroke="#3b4cca" stroke-width="2"/></svg>')
    return Markup(svg)  # built from numbers only: nothing to escape
