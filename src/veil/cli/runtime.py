"""`veil runtime`: the secure stage's Python and packages, as the server measures them."""

from __future__ import annotations

import typer

from veil.cli._common import TokenOption, UrlOption, api_errors, client, console, print_json


def runtime(
    grep: str = typer.Argument(None, help="show only packages whose name contains this"),
    as_json: bool = typer.Option(False, "--json", help="print the whole answer as JSON"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """List the Python packages a notebook can import in the secure stage, with versions.

    Their digest is measured into every launch (the token's `submods.runtime.packages`).
    """
    with api_errors():
        info = client(url, token).runtime()
    if as_json:
        print_json(info)
        return
    console.print(f"{info['runtime']} ({info['implementation']} {info['python']})",
                  highlight=False)
    console.print(f"packages digest {info['packages_digest']}", highlight=False)
    shown = [p for p in info["packages"] if not grep or grep.lower() in p["name"]]
    width = max((len(p["name"]) for p in shown), default=0)
    for package in shown:
        console.print(f"{package['name']:<{width}}  {package['version']}", highlight=False)
