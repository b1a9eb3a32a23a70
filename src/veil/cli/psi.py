"""`veil psi ...`: DPCA-PSI from the command line (keygen, run, measure, reveal, tau, audit)."""

from __future__ import annotations

from pathlib import Path

import typer

from veil.cli.psi_audit import audit
from veil.cli.psi_tau import tau

app = typer.Typer(help="DPCA-PSI: multi-ID private set intersection with DP and secret shares.",
                  no_args_is_help=True)
app.command("tau")(tau)
app.command("audit")(audit)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise _fail(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


@app.command()
def keygen(
    out: Path | None = typer.Option(None, "--out", help="directory (default $VEIL_HOME/psi)"),
    name: str = typer.Option("identity", "--name"),
) -> None:
    """Create this party's TLS certificate and key; print the fingerprint to give the peer."""
    from veil.psi.budget import veil_home
    from veil.psi.transport import generate_identity

    ident, fp = generate_identity(out or veil_home() / "psi", name)
    typer.echo(f"certificate: {ident.cert}\nkey: {ident.key}\nfingerprint: {fp}")


@app.command()
def run(
    role: str = typer.Option(..., "--role", help="sender or receiver"),
    listen: str | None = typer.Option(None, "--listen", help="HOST:PORT to listen on"),
    connect: str | None = typer.Option(None, "--connect", help="HOST:PORT to connect to"),
    input_file: Path = typer.Option(..., "--input", help="CSV or Parquet file"),
    ids: str = typer.Option(..., "--ids", help="ID columns in priority order, e.g. email,phone"),
    features: str | None = typer.Option(None, "--features", help="uint64 feature columns"),
    zero_column: str | None = typer.Option(None, "--zero-column",
                                           help="feature set to 0 on dummy rows"),
    epsilon: float = typer.Option(2.0, "--epsilon"),
    queries: int = typer.Option(10, "--queries", help="runs allowed (T)"),
    delta: float | None = typer.Option(None, "--delta", help="default 1/(10N)"),
    min_tau: int | None = typer.Option(None, "--min-tau", help="raise tau to at least this"),
    no_dp: bool = typer.Option(False, "--no-dp", help="plain multi-ID PSI without dummies"),
    group: str = typer.Option("ristretto255", "--group", help="ristretto255 or p256"),
    paillier_bits: int = typer.Option(2048, "--paillier-bits"),
    packing: str = typer.Option("masker", "--packing",
                                help="who packs masked rows: masker (fastest), owner, none"),
    output: Path = typer.Option(..., "--output", help="CSV of this party's shares"),
    cert: Path | None = typer.Option(None, "--cert", help="own certificate (default: keygen's)"),
    key: Path | None = typer.Option(None, "--key", help="own key (default: keygen's)"),
    peer_cert: Path = typer.Option(..., "--peer-cert", help="the peer's pinned certificate"),
    peer_fingerprint: str | None = typer.Option(None, "--peer-fingerprint"),
    dataset: str | None = typer.Option(None, "--dataset", help="budget key (default: input path)"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds to wait for the peer"),
    max_peer_rows: int = typer.Option(10_000_000, "--max-peer-rows",
                                      help="refuse a peer announcing more rows"),
) -> None:
    """Run one DPCA-PSI session with a peer; write shares only if the whole run succeeds."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    from veil.psi.budget import veil_home
    from veil.psi.errors import PsiError
    from veil.psi.inputs import read_party_data, write_shares
    from veil.psi.runtime import run_party
    from veil.psi.session import PsiConfig, PsiParty
    from veil.psi.transport import Identity, Listener
    from veil.psi.transport import connect as tls_connect

    if role not in ("sender", "receiver"):
        raise _fail("--role must be sender or receiver")
    if (listen is None) == (connect is None):
        raise _fail("give exactly one of --listen or --connect")
    feats = _split(features)
    zc = None
    if zero_column:
        if zero_column not in feats:
            raise _fail("--zero-column must be one of --features")
        zc = feats.index(zero_column)
    home = veil_home() / "psi"
    me = Identity(cert or home / "identity.crt", key or home / "identity.key")
    console = Console(stderr=True)
    try:
        data = read_party_data(input_file, _split(ids), feats)
        config = PsiConfig(
            role=role,  # type: ignore[arg-type]
            group=group, input_dp=not no_dp, epsilon=epsilon, queries=queries, delta=delta,
            min_tau=min_tau or 0, zero_column=zc, paillier_bits=paillier_bits, packing=packing,
            max_peer_rows=max_peer_rows)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            tasks: dict[str, TaskID] = {}

            def on_phase(phase: str) -> None:
                for t in tasks.values():
                    progress.update(t, total=1, completed=1)
                if phase != "done":
                    tasks[phase] = progress.add_task(phase, total=None)

            party = PsiParty(config, data, progress=on_phase)
            del data  # the party holds what it needs; the rest can go before the big phases
            if listen is not None:
                host, port = _hostport(listen)
                listener = Listener(host, port, me, peer_cert)
                try:
                    channel = listener.accept(peer_fingerprint=peer_fingerprint, timeout=timeout,
                                              accept_timeout=timeout)
                finally:
                    listener.close()
            else:
                host, port = _hostport(connect or "")
                channel = tls_connect(host, port, me, peer_cert,
                                      peer_fingerprint=peer_fingerprint, timeout=timeout)
            result = run_party(party, channel, dataset=dataset or str(input_file.resolve()))
        zero_name = f"{role}:{feats[zc]}" if zc is not None else None
        write_shares(output, result.share_names, result.shares, tau=result.tau,
                     zero_columns=(zero_name,) if zero_name else ())
    except PsiError as exc:
        raise _fail(str(exc)) from None
    for line in _explain(result.round_sizes, result.tau, _split(ids), result.share_names):
        typer.echo(line)
    typer.echo(f"shares written to {output} ({result.intersection_size} rows)")


def _explain(sizes: tuple[int, ...], tau: int, ids: list[str],
             share_names: tuple[str, ...]) -> list[str]:
    """The run's revealed sizes, each with what it is made of (spec §4)."""
    from veil.psi.estimate import estimate

    k = len(sizes)
    est = estimate(sizes, tau)
    lines = [f"round sizes: {' '.join(map(str, sizes))}"]
    if tau == 0:
        lines.append(f"tau: 0 (no DP): the sizes are exact; intersection size: {sum(sizes)}")
        return lines
    lines.append(f"tau: {tau} (each party added {k} x {tau} = {k * tau} dummy rows)")
    for c, r in enumerate(est.rounds):
        what = "matches on" if c == 0 else "new matches (rows unmatched so far) on"
        lines.append(
            f"round {c + 1}: {r.noisy} = real {what} {ids[c] if c < len(ids) else c}"
            f" + about {r.expected_dummies:g} ± {r.sd:.1f} dummy matches (tau/2)")
    lines.append(
        f"intersection size (noisy): {est.noisy} = real matches + about "
        f"{est.expected_dummies:g} dummy matches ({k} x tau/2)")
    lines.append(
        f"intersection size (estimate): {est.estimate:g}, 95% interval "
        f"[{est.low:.0f}, {est.high:.0f}] (noisy size minus {est.expected_dummies:g}; "
        f"sd {est.sd:.1f})")
    if share_names:
        lines.append(
            "the shares include the dummy matches: sum a feature only over rows whose zero "
            "column is non-zero (veil psi measure --real does this)")
    return lines


@app.command()
def reveal(
    a: Path = typer.Argument(..., help="one party's share CSV"),
    b: Path = typer.Argument(..., help="the other party's share CSV"),
    row_level: bool = typer.Option(
        False, "--i-understand-row-level-reveal",
        help="required: whoever holds both share files learns every matched row's values"),
) -> None:
    """Reconstruct two share files in the clear (row level; prefer veil psi measure)."""
    from veil.psi.errors import PsiError
    from veil.psi.inputs import reveal as reveal_shares

    if not row_level:
        raise _fail(
            "veil psi reveal rebuilds every matched row's values in the clear, which defeats "
            "the point of the shares; use veil psi measure for noisy totals, or pass "
            "--i-understand-row-level-reveal")
    typer.secho("ROW-LEVEL REVEAL: every matched row's values are rebuilt in the clear "
                "(no DP on the sums)", err=True, fg=typer.colors.YELLOW, bold=True)
    try:
        revealed = reveal_shares(a, b)
    except PsiError as exc:
        raise _fail(str(exc)) from None
    size_kind = "noisy, includes dummy matches" if revealed.tau else "exact"
    typer.echo(f"intersection size: {revealed.rows} ({size_kind})")
    if revealed.refused:
        raise _fail(revealed.refused)
    if revealed.zero_columns:
        where = " and ".join(f"{z} != 0" for z in revealed.zero_columns)
        typer.echo(f"real rows ({where}): {revealed.real_rows}")
    for name, total in revealed.sums.items():
        typer.echo(f"sum {name}: {total}")


@app.command()
def measure(
    role: str = typer.Option(..., "--role", help="publisher (impressions) or advertiser"),
    shares: Path = typer.Option(..., "--shares", help="this party's share CSV from veil psi run"),
    listen: str = typer.Option(..., "--listen", help="HOST:PORT of this party's MPC link"),
    peer: str = typer.Option(..., "--peer", help="HOST:PORT of the peer's MPC link"),
    impression_time: str = typer.Option(..., "--impression-time",
                                        help="share column of t0, e.g. sender:t0"),
    conversion_time: str = typer.Option(..., "--conversion-time",
                                        help="share column of t1, e.g. receiver:t1"),
    value: str | None = typer.Option(None, "--value", help="share column of the value"),
    campaign: str | None = typer.Option(None, "--campaign", help="share column of campaign id"),
    group: str | None = typer.Option(None, "--group", help="share column: non-zero = test"),
    real: str | None = typer.Option(None, "--real",
                                    help="zero column (non-zero on real rows), needed with DP"),
    campaigns: str | None = typer.Option(None, "--campaigns", help="public list, e.g. 1,2,3"),
    window: str = typer.Option("7d", "--window", help="attribution window: 0 < t1 - t0 <= it"),
    time_unit: float = typer.Option(1.0, "--time-unit", help="seconds per time unit of t0/t1"),
    metrics: str = typer.Option("conversions,value", "--metrics",
                                help="conversions,value,lift"),
    cap: int = typer.Option(..., "--cap", help="values are clipped to [0, cap] inside the MPC"),
    epsilon: float = typer.Option(..., "--epsilon", help="total epsilon of this measurement"),
    delta: float = typer.Option(1e-6, "--delta"),
    reveal_to: str = typer.Option("both", "--reveal-to", help="both, publisher or advertiser"),
    budget: float = typer.Option(10.0, "--budget",
                                 help="total epsilon allowed per peer and dataset"),
    dataset: str = typer.Option(..., "--dataset", help="budget key: the dataset measured"),
    peer_cert: Path = typer.Option(..., "--peer-cert",
                                   help="the peer's pinned certificate (keys the budget too)"),
    cert: Path | None = typer.Option(None, "--cert", help="own certificate (default: keygen's)"),
    key: Path | None = typer.Option(None, "--key", help="own key (default: keygen's)"),
    output: Path | None = typer.Option(None, "--output", help="write the report as JSON"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds to wait for the peer"),
) -> None:
    """Private ads measurement (PPAM) on the shares of a PSI run: only noisy totals are revealed."""
    import json

    from veil.psi.budget import MeasurementBudget, veil_home
    from veil.psi.errors import PsiError
    from veil.psi.ppam.engine import LinkTls
    from veil.psi.ppam.measure import measure as run_measure
    from veil.psi.ppam.measure import read_share_table
    from veil.psi.ppam.plan import MeasurePlan, ShareColumns, parse_window
    from veil.psi.transport import fingerprint
    from veil.settings import Settings

    if role not in ("publisher", "advertiser"):
        raise _fail("--role must be publisher or advertiser")
    _hostport(listen), _hostport(peer)
    try:
        peer_fp = fingerprint(peer_cert.read_bytes())
    except OSError as exc:
        raise _fail(f"cannot read --peer-cert {peer_cert}: {exc.strerror}") from None
    try:
        camp = tuple(int(c) for c in _split(campaigns))
    except ValueError:
        raise _fail("--campaigns must be whole numbers, e.g. 1,2,3") from None
    settings = Settings.from_env()
    home = veil_home() / "psi"
    tls = LinkTls(cert or home / "identity.crt", key or home / "identity.key", peer_cert)
    try:
        plan = MeasurePlan(
            ShareColumns(impression_time, conversion_time, value, campaign, group, real),
            window=parse_window(window, time_unit_s=time_unit), cap=cap,
            metrics=tuple(_split(metrics)), epsilon=epsilon, delta=delta, campaigns=camp,
            reveal_to=reveal_to)  # type: ignore[arg-type]
        table = read_share_table(shares)
        result = run_measure(
            role, table, plan, listen=listen, peer=peer, peer_fingerprint=peer_fp,  # type: ignore[arg-type]
            dataset=dataset, budget=MeasurementBudget(), budget_limit=budget,
            tls=tls, mpc_python=settings.mpc_python, timeout_s=timeout,
            on_phase=lambda phase: typer.echo(f"mpc: {phase}", err=True))
    except PsiError as exc:
        raise _fail(str(exc)) from None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result.to_json(), indent=1, sort_keys=True) + "\n")
    for line in _measure_table(result):
        typer.echo(line)
    if output is not None:
        typer.echo(f"report written to {output}")


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _measure_table(result: object) -> list[str]:
    """The report as a fixed-width table: each figure with its ~95% interval."""
    from veil.psi.ppam.measure import MeasureReport

    assert isinstance(result, MeasureReport)
    head = (f"PPAM ({result.role}): epsilon {result.epsilon:g}, delta {result.delta:g}, "
            f"window {result.window} time units, values clipped to {result.cap}; "
            "every figure carries MPC-DualDP noise")
    if not result.told:
        return [head, "the result is revealed to the other party only (--reveal-to)"]
    lines = [head, f"{'campaign':<10} {'metric':<30} {'noisy value':>14}  95% interval"]
    for camp, figures in result.campaigns.items():
        for name, est in figures.items():
            if est is None:
                lines.append(f"{camp:<10} {name:<30} {'n/a':>14}  (too few users after noise)")
            else:
                lines.append(f"{camp:<10} {name:<30} {_num(est.value):>14}  "
                             f"[{_num(est.low)}, {_num(est.high)}]")
    return lines
