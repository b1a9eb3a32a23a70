"""The audit's outputs: a printed table (pure), and the CSV and PNG files (the only I/O here)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from veil.psi.audit.linkage import LinkageResult
from veil.psi.audit.sweep import SweepRow

__all__ = ["linkage_table", "summary_table", "write_csv", "write_plot"]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def summary_table(rows: Sequence[SweepRow]) -> list[str]:
    """One line per (oracle, attack, ε) at its largest call budget, as a Markdown table."""
    last: dict[tuple[str, str, float | None], SweepRow] = {}
    for r in rows:
        key = (r.oracle, r.attack, r.epsilon)
        if key not in last or r.calls > last[key].calls:
            last[key] = r
    out = [
        "| oracle | attack | ε | τ | calls | leakage % | members % | non-members % | precision"
        " | advantage % | DP bound % | within |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in last.values():
        eps = "-" if r.epsilon is None else f"{r.epsilon:g}"
        bound = "-" if r.bound is None else _pct(r.bound)
        if r.bound is None:
            within = "-"
        else:
            # the mean of `reps` runs: allow two standard errors of sampling error
            slack = 2 * r.advantage_sd / max(r.reps, 1) ** 0.5
            within = "yes" if r.advantage <= r.bound + slack else "NO"
        out.append(
            f"| {r.oracle} | {r.attack} | {eps} | {r.tau} | {r.calls} | {_pct(r.leakage)} | "
            f"{_pct(r.positive)} | {_pct(r.negative)} | {r.precision:.2f} | "
            f"{_pct(r.advantage)} ± {_pct(r.advantage_sd)} | {bound} | {within} |")
    return out


def linkage_table(results: Sequence[LinkageResult]) -> list[str]:
    out = ["| observer | τ | trials | accuracy % | advantage % | best possible % | DP bound % |",
           "|---|---|---|---|---|---|---|"]
    for r in results:
        bound = "-" if r.bound is None else _pct(r.bound)
        out.append(f"| {r.observer} | {r.tau} | {r.trials} | {_pct(r.accuracy)} | "
                   f"{_pct(r.advantage)} | {_pct(r.best_possible)} | {bound} |")
    return out


def _atomic(path: Path, suffix: str) -> tuple[int, str]:
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)


def write_csv(rows: Sequence[SweepRow], path: Path) -> None:
    """Every sweep point, one row each (written to a temporary file, then renamed)."""
    fd, tmp = _atomic(path, ".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(SweepRow)])
            writer.writeheader()
            for r in rows:
                writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plot(rows: Sequence[SweepRow], path: Path) -> None:
    """Leakage and advantage against calls: one row of panels per attack, one line per oracle/ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(r.attack for r in rows))
    fig, axes = plt.subplots(len(attacks), 2, figsize=(13, 3.2 * len(attacks)), squeeze=False)
    colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]  # > 10 lines per panel
    for row_axes, attack in zip(axes, attacks, strict=True):
        series: dict[str, list[SweepRow]] = {}
        for r in rows:
            if r.attack == attack:
                label = r.oracle if r.epsilon is None else f"{r.oracle} ε={r.epsilon:g}"
                series.setdefault(label, []).append(r)
        for i, (label, pts) in enumerate(series.items()):
            pts.sort(key=lambda p: p.calls)
            style = "-" if pts[0].epsilon is None else "--"
            marker = "o" if len(pts) == 1 else None
            xs = [p.calls for p in pts]
            colour = colours[i % len(colours)]
            row_axes[0].plot(xs, [100 * p.leakage for p in pts], style, marker=marker,
                             color=colour, label=label)
            row_axes[1].plot(xs, [100 * p.advantage for p in pts], style, marker=marker,
                             color=colour, label=label)
        bounds = sorted({r.bound for r in rows if r.attack == attack and r.bound is not None})
        for b in bounds:
            row_axes[1].axhline(100 * b, color="grey", linewidth=0.6, linestyle=":")
        row_axes[0].set_title(f"{attack}: leakage (correct / |X|)")
        row_axes[1].set_title(f"{attack}: advantage (correct - wrong) / |X|; dotted: DP bounds")
        for ax in row_axes:
            ax.set_xlabel("PSI calls")
            ax.set_ylabel("%")
            ax.grid(alpha=0.3)
        row_axes[1].legend(fontsize=6, ncol=2, loc="upper left")
    fig.tight_layout()
    fd, tmp = _atomic(path, ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
