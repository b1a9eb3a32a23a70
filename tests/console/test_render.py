"""The pure core of what reviewers read: highlighted bundles, previews and risk hints."""

from __future__ import annotations

import io
import json

import pandas as pd

from veil.jobs.bundle import normalise_notebook
from veil.server.console.render import InputFacts, preview, render_bundle
from veil.server.console.templating import templates

XSS = "<script>alert(1)</script>"


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def test_notebook_cells_are_highlighted_and_inert() -> None:
    nb = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": f"# Title {XSS}"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": f"x = '{XSS}'"}]}).encode()
    files = render_bundle({"a.ipynb": normalise_notebook(nb), "b.py": b"import veil\n"})
    cells = files[0].cells
    assert [c.kind for c in cells] == ["markdown", "code"]
    for cell in cells:
        assert "<script>" not in cell.html and "&lt;script&gt;" in cell.html
    assert 'class="hl"' in files[1].cells[0].html and "import" in files[1].cells[0].html


def test_table_preview_hints_row_level_keys() -> None:
    frame = pd.DataFrame({"patient_id": range(200), "ssn": [f"s{i}" for i in range(200)],
                          "region": ["north", "south"] * 100, XSS: [1.5] * 200})
    shown = preview("table", "application/vnd.apache.parquet", _parquet(frame),
                    {"workload_computed": True}, InputFacts(frozenset({"patient_id"}), 5))
    assert shown.shape == (200, 4) and len(shown.rows) == 10
    text = " ".join(shown.hints)
    assert "'patient_id' is an input's privacy-unit id" in text
    assert "'ssn' has a different value on every one of the 200 rows" in text
    assert "region" not in text and "200 rows: tables this long" in text
    html = templates.get_template("provider_job.html")  # columns go through autoescape
    assert html is not None


def test_small_groups_json_and_figures() -> None:
    frame = pd.DataFrame({"region": ["n", "s"], "n": [3, 40]})
    shown = preview("table", "application/vnd.apache.parquet", _parquet(frame),
                    {"smallest_group_claimed": 3}, InputFacts(frozenset(), 10))
    assert any("smallest group 3 is below the minimum 10" in h for h in shown.hints)
    gate = preview("table", "application/vnd.apache.parquet", _parquet(frame),
                   {"smallest_group_claimed": 3, "risk": "a group of 3 is below k"},
                   InputFacts(frozenset(), 10))
    assert gate.hints == ["a group of 3 is below k"]
    listing = preview("dict", "application/json", json.dumps({"ages": list(range(50))}).encode(),
                      {}, InputFacts())
    assert listing.kind == "json" and any("list of 50" in h for h in listing.hints)
    figure = preview("figure", "image/png", b"\x89PNG", {}, InputFacts())
    assert figure.kind == "figure" and "individual records" in figure.hints[0]
    broken = preview("table", "application/vnd.apache.parquet", b"nope", {}, InputFacts())
    assert broken.kind == "none"


def test_previews_are_escaped_in_the_page() -> None:
    frame = pd.DataFrame({XSS: [XSS]})
    shown = preview("table", "application/vnd.apache.parquet", _parquet(frame), {},
                    InputFacts())
    template = templates.env.from_string(
        "{% for c in p.columns %}<th>{{ c }}</th>{% endfor %}"
        "{% for r in p.rows %}{% for v in r %}<td>{{ v }}</td>{% endfor %}{% endfor %}")
    html = template.render(p=shown)
    assert "<script>" not in html and html.count("&lt;script&gt;") == 2


def test_bundle_diff_is_escaped_and_none_without_changes() -> None:
    from veil.server.console.render import bundle_diff

    old = {"a.py": b"x = 1\n", "gone.py": b"y = 2\n"}
    new = {"a.py": f"x = '{XSS}'\n".encode(), "new.py": b"z = 3\n"}
    html = bundle_diff(old, new)
    assert html is not None and "<script>" not in html
    for text in ("approved/a.py", "this job/new.py", "approved/gone.py", "&lt;script&gt;"):
        assert text in html
    assert bundle_diff(old, dict(old)) is None


def test_budget_chart_is_a_static_svg() -> None:
    from veil.server.console.render import budget_chart

    svg = budget_chart([("2026-12-01T00:00:00", 0.5), ("2026-12-02T00:00:00", 0.25)], 3.0)
    assert svg.startswith("<svg") and "<script" not in svg and "style=" not in svg
    assert 'aria-label="0.75 of 3 epsilon charged in 2 charges"' in svg
    assert "polyline" in budget_chart([], 1.0)
