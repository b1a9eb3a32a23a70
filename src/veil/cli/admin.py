"""`veil admin ...`: bootstrap and manage identities."""

from __future__ import annotations

from pathlib import Path

import typer

from veil.cli._common import TokenOption, UrlOption, api_errors, client, console, err_console

app = typer.Typer(help="Identities: the first admin, parties, users, tokens.",
                  no_args_is_help=True)


@app.command()
def init(
    home: Path = typer.Option(None, "--home", envvar="VEIL_HOME", help="state folder"),
    database_url: str = typer.Option(None, "--database-url", envvar="VEIL_DATABASE_URL"),
    name: str = typer.Option("admin", "--name"),
) -> None:
    """Create the first admin and print its token (shown once; only its hash is stored)."""
    from veil.identity import IdentityError, Role, create_user, has_admin
    from veil.names import InvalidName
    from veil.settings import Settings
    from veil.store import open_database

    settings = Settings.from_env(home=home, database_url=database_url)
    settings.ensure_dirs()
    db = open_database(settings.db_url)
    try:
        with db.transaction() as session:
            if has_admin(session):
                err_console.print("[red]error[/red]: an admin already exists")
                raise typer.Exit(1)
            _, token = create_user(session, name, role=Role.ADMIN, party=None,
                                   actor="cli:admin-init")
    except (IdentityError, InvalidName) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    console.print(token, highlight=False)


@app.command("create-party")
def create_party(name: str, url: str = UrlOption, token: str = TokenOption) -> None:
    with api_errors():
        party = client(url, token).create_party(name)
    console.print(f"party {party['name']} created")


@app.command("create-user")
def create_user(
    name: str,
    role: str = typer.Option(..., "--role", help="provider | consumer | admin"),
    party: str = typer.Option(None, "--party"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Create a user; prints its API token (shown once)."""
    with api_errors():
        user = client(url, token).create_user(name, role, party)
    console.print(user["token"], highlight=False)


@app.command()
def recover(
    home: Path = typer.Option(None, "--home", envvar="VEIL_HOME", help="state folder"),
    database_url: str = typer.Option(None, "--database-url", envvar="VEIL_DATABASE_URL"),
    name: str = typer.Option("admin", "--name", help="the admin who lost their token"),
) -> None:
    """Mint a new token for an admin, on the server's host (needs the state folder/database).

    Not an API route on purpose: whoever can run this can already read the server's state.
    The old tokens stay valid until revoked (`veil admin revoke-token`).
    """
    from veil.identity import IdentityError, recover_admin
    from veil.settings import Settings
    from veil.store import open_database

    settings = Settings.from_env(home=home, database_url=database_url)
    if settings.database_url is None and not (settings.home / "veil.sqlite").exists():
        err_console.print(f"[red]error[/red]: no Veil state in {settings.home}")
        raise typer.Exit(1)
    db = open_database(settings.db_url)
    try:
        with db.transaction() as session:
            token = recover_admin(session, name, actor="cli:admin-recover")
    except IdentityError as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    console.print(token, highlight=False)


@app.command()
def users(url: str = UrlOption, token: str = TokenOption) -> None:
    """List users (name, role, party)."""
    with api_errors():
        rows = client(url, token).users()
    for row in rows:
        console.print(f"{row['name']}\t{row['role']}\t{row['party'] or '-'}", highlight=False)


@app.command()
def parties(url: str = UrlOption, token: str = TokenOption) -> None:
    with api_errors():
        rows = client(url, token).parties()
    for row in rows:
        console.print(row["name"], highlight=False)


@app.command()
def tokens(url: str = UrlOption, token: str = TokenOption) -> None:
    """List token records (id, user, issued, state); tokens themselves are never stored."""
    with api_errors():
        rows = client(url, token).tokens()
    for row in rows:
        state = "revoked" if row["revoked"] else "active"
        console.print(f"{row['id']}\t{row['user']}\t{row['created_at'][:19]}\t{state}",
                      highlight=False)


@app.command("revoke-token")
def revoke_token(token_id: str, url: str = UrlOption, token: str = TokenOption) -> None:
    """Revoke a token (see `veil admin tokens`); its console sessions end too."""
    with api_errors():
        client(url, token).revoke_token(token_id)
    console.print(f"token {token_id} revoked")


@app.command("rotate-token")
def rotate_token(token_id: str, url: str = UrlOption, token: str = TokenOption) -> None:
    """Revoke a token and print its user's new one (shown once)."""
    with api_errors():
        issued = client(url, token).rotate_token(token_id)
    console.print(issued["token"], highlight=False)
