"""`veil budget`: remaining privacy budgets."""

from __future__ import annotations

from rich.table import Table

from veil.cli._common import TokenOption, UrlOption, api_errors, client, console


def budget(url: str = UrlOption, token: str = TokenOption) -> None:
    """Show the (epsilon, delta) left per dataset and consumer."""
    with api_errors():
        rows = client(url, token).budgets()
    table = Table("dataset", "consumer", "epsilon left", "of", "spent by views", "delta left",
                  "rule", "renews")
    for row in rows:
        views = row.get("views_epsilon") or {}
        spent = ", ".join(f"{k} {v:.3g}" for k, v in sorted(views.items())) or "-"
        table.add_row(row["dataset"], row["consumer"], f"{row['epsilon_left']:.4g}",
                      f"{row['epsilon_total']:.4g}", spent, f"{row['delta_left']:.3g}",
                      row["rule"], row["renewal"] or "never")
    console.print(table)
