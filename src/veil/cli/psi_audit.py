"""`veil psi audit`: the membership-leakage audit (AnonPSI attacks vs ECDH-PSI and DPCA-PSI)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from veil.psi.errors import AuditError


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _calls(value: str) -> tuple[int, ...]:
    """'1-30', '1,5,10' or a mix ('1-5,10,20')."""
    out: list[int] = []
    for part in (p.strip() for p in value.split(",")):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise AuditError(f"--calls: expected numbers or ranges like 1-30, got {part!r}")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a < 1 or b < a or b > 1000:
            raise AuditError(f"--calls: range {part!r} must be within 1..1000 and ascending")
        out.extend(range(a, b + 1))
    return tuple(sorted(set(out)))


def _floats(value: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise AuditError(f"{name}: expected comma-separated numbers, got {value!r}") from None


def _names(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def audit(
    out: Path = typer.Option(Path("psi-audit"), "--out", help="folder for audit.csv and "
                             "audit.png (created)"),
    calls: str = typer.Option("1-30", "--calls", help="call budgets, e.g. 1-30 or 1,5,10"),
    epsilons: str = typer.Option("1,2,4,8", "--epsilons", help="ε values for the DP oracles"),
    reps: int = typer.Option(20, "--reps", help="runs averaged per point"),
    size: int = typer.Option(20, "--size", help="|X| = |Y|"),
    intersection: int | None = typer.Option(None, "--intersection",
                                            help="|X ∩ Y| (default size/2)"),
    ids: int = typer.Option(2, "--ids", help="k for the multi-ID oracles"),
    oracles: str | None = typer.Option(None, "--oracles", help="subset of oracles (default all; "
                                       "the *-faithful ones only with --faithful-reps)"),
    attacks: str | None = typer.Option(None, "--attacks", help="subset of attacks"),
    faithful_reps: int = typer.Option(0, "--faithful-reps",
                                      help="runs of DPCA-PSI through the real protocol at the "
                                      "largest budget (slow; 0 = skip)"),
    linkage_trials: int = typer.Option(2000, "--linkage-trials"),
    linkage_faithful: int = typer.Option(4, "--linkage-faithful",
                                         help="linkage games through the real protocol"),
    seed: int | None = typer.Option(None, "--seed", help="reproduce a sweep"),
) -> None:
    """Attack plain and multi-ID ECDH-PSI, DPCA-PSI and PPAM sums; print, write CSV and plot."""
    from veil.psi.audit.linkage import linkage_test
    from veil.psi.audit.report import linkage_table, summary_table, write_csv, write_plot
    from veil.psi.audit.sweep import ORACLES, SweepConfig, run_sweep
    from veil.psi.errors import PsiError
    from veil.psi.tau import choose_tau

    started = time.perf_counter()
    try:
        chosen = _names(oracles)
        if chosen is None:
            chosen = tuple(o for o in ORACLES if not o.endswith("-faithful") or faithful_reps)
        if any(o.endswith("-faithful") for o in chosen) and not faithful_reps:
            raise AuditError("the *-faithful oracles need --faithful-reps >= 1")
        cfg = SweepConfig(
            n_x=size, n_y=size, intersection=size // 2 if intersection is None else intersection,
            k_multi=ids, calls=_calls(calls), epsilons=_floats(epsilons, "--epsilons"),
            reps=reps, oracles=chosen, faithful_reps=faithful_reps, seed=seed,
            attacks=_names(attacks) or SweepConfig.attacks,
        )
        if out.exists() and not out.is_dir():
            raise AuditError(f"--out {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)

        taus: dict[tuple[int, float], int] = {}

        def tau_for(k: int, eps: float) -> int:
            if (k, eps) not in taus:
                taus[(k, eps)] = choose_tau(k, cfg.queries, eps, max(cfg.n_x, cfg.n_y)).tau
            return taus[(k, eps)]

        t0 = time.perf_counter()
        for eps in cfg.epsilons:  # up front, so the sweep's time is the attacks' alone
            for k in sorted({1, cfg.k_multi}):
                tau_for(k, eps)
        t_tau = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = run_sweep(cfg, tau_for, progress=lambda what: typer.echo(f"  {what}", err=True))
        t_sweep = time.perf_counter() - t0
        t0 = time.perf_counter()
        link_eps = min(cfg.epsilons)
        links = linkage_test(tau_for(2, link_eps), epsilon=link_eps, delta=cfg.delta,
                             trials=linkage_trials, faithful_trials=linkage_faithful)
        t_link = time.perf_counter() - t0
    except PsiError as exc:
        raise _fail(str(exc)) from None

    typer.echo(f"taus (T = {cfg.queries} queries, N = {max(cfg.n_x, cfg.n_y)}, "
               f"δ = {cfg.delta:.3g}): "
               + ", ".join(f"k={k} ε={e:g}: {t}" for (k, e), t in sorted(taus.items())))
    typer.echo(f"\nmembership leakage at the largest call budget (|X| = {cfg.n_x}, "
               f"|X ∩ Y| = {cfg.intersection}, {cfg.reps} runs per point):")
    for line in summary_table(rows):
        typer.echo(line)
    typer.echo(f"\ncross-identifier linkage of the cascade (k = 2, τ for ε = {link_eps:g}):")
    for line in linkage_table(links):
        typer.echo(line)
    csv_path, png_path = out / "audit.csv", out / "audit.png"
    write_csv(rows, csv_path)
    write_plot(rows, png_path)
    typer.echo(f"\nwrote {csv_path} ({len(rows)} points) and {png_path}")
    typer.echo(f"runtime: {time.perf_counter() - started:.1f} s (tau {t_tau:.1f} s, sweep "
               f"{t_sweep:.1f} s, linkage {t_link:.1f} s)")
