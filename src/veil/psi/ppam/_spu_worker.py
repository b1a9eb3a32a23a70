"""One party's SPU process for PPAM: Cheetah 2PC over a brpc link, driven by Veil over stdin/stdout.

Runs in its own environment (`.venv-mpc`: spu 0.9.5 needs numpy < 2 and jax <= 0.4.34, Veil
has numpy 2), so it imports nothing from `veil`; `veil.psi.ppam.engine` starts it and owns
the protocol. Wire protocol (version 1):

- stdin: one JSON line (the job: rank, link addresses, plan, rows, columns, reveal_to), then
  rows x columns little-endian uint64 values, column after column: this party's additive
  shares from `veil psi run`.
- stdout: JSON lines, each an object with "event": "phase" (name), then exactly one of
  "result" (values: the revealed noisy aggregates in lattice units, or null for a party that
  is not told; stats) or "error" (kind, message). SPU's own logs go to stderr.

Ring mapping: Veil's shares are additive mod 2^64 and SPU's FM64 ring is Z_2^64, so each
party feeds its share column, bit-cast to int64, as its private input (secret-shared by the
owner with SPU's Io and sent over the link); inside the MPC x = s_publisher + s_advertiser is
an exact ring addition, and reading the sum as int64 gives every value below 2^63 unchanged.
No conversion between moduli is needed (FM128 would need a secure reduction mod 2^64).

Noise (spec §9, MPC-DualDP): for each aggregate each party draws its N fair bits from
os.urandom; the coin is x0 XOR x1 = x0 + x1 - 2 x0 x1, so the coin sum is
sum(x0) + sum(x1) - 2 <x0, x1>, one secure dot product per aggregate (Cheetah's HE matmul,
far cheaper than N secure multiplications). Each coin is uniform if either party's bits are,
and neither party learns the sum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

PROTOCOL_VERSION = 1
_events: Any = None
"""The events channel: the original stdout. fd 1 itself is pointed at stderr, because SPU and
its libraries print to stdout, which would corrupt the JSON lines."""


def _emit(**event: Any) -> None:
    _events.write(json.dumps(event, sort_keys=True) + "\n")
    _events.flush()


class WorkerError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _read_exact(stream: Any, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(min(left, 1 << 24))
        if not chunk:
            raise WorkerError("input", f"stdin ended {left} bytes early")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _bytes_sent_by_me() -> int | None:
    """Bytes this process has sent over TCP so far (kernel counters via `ss`), for benchmarks."""
    try:
        out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total, mine = 0, False
    pid = f"pid={os.getpid()},"
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            mine = pid in line
            continue
        if mine:
            m = re.search(r"bytes_sent:(\d+)", line)
            total += int(m.group(1)) if m else 0
    return total


def _ppam_function(plan: dict[str, Any], columns: list[str]) -> Any:
    """The measurement as a jax function of (own shares, peer shares, own coins, peer coins)."""
    import jax.numpy as jnp

    idx = {name: columns.index(name) for name in columns}
    roles = plan["roles"]
    window, cap = int(plan["window"]), int(plan["cap"])
    campaigns = plan["campaigns"]
    lift = bool(plan["lift"])
    aggregates = plan["aggregates"]
    kinds = ("users", "conversions", "value", "value_sq")

    def f(s0: Any, s1: Any, c0: Any, c1: Any) -> Any:
        x = s0 + s1  # exact in Z_2^64 (FM64)

        def col(role: str) -> Any:
            return x[:, idx[roles[role]]]

        n = x.shape[0]
        real = (col("real") != 0) if roles.get("real") else jnp.ones(n, dtype=bool)
        d = col("conversion_time") - col("impression_time")
        attr = real & (d > 0) & (d <= window)
        v = jnp.clip(col("value"), 0, cap) if roles.get("value") else jnp.zeros(n, jnp.int64)
        attr_i = attr.astype(jnp.int64)
        av = attr_i * v
        feats = jnp.stack([real.astype(jnp.int64), attr_i, av, av * v], axis=1)  # n x 4
        if campaigns:
            camp = col("campaign")
            cells_c = [(camp == c) for c in campaigns]
        else:
            cells_c = [jnp.ones(n, dtype=bool)]
        if lift:
            test = col("group") != 0
            cells = [c & g for c in cells_c for g in (test, ~test)]
        else:
            cells = cells_c
        k = jnp.stack([c.astype(jnp.int64) for c in cells], axis=1)  # n x cells
        table = k.T @ feats  # cells x 4: one secure matmul
        outs = []
        offset = 0
        for agg in aggregates:
            value = table[agg["cell"], kinds.index(agg["kind"])]
            shift = int(agg["shift"])
            if shift:
                value = (value + (1 << (shift - 1))) >> shift  # round to the noise lattice
            coins = int(agg["coins"])
            if coins:
                a, b = c0[offset:offset + coins], c1[offset:offset + coins]
                offset += coins
                value = value + (jnp.sum(a) + jnp.sum(b) - 2 * jnp.dot(a, b) - coins // 2)
            outs.append(value)
        return jnp.stack(outs)

    return f


def _share_input(rt: Any, io: Any, lctx: Any, libspu: Any, name: str, owner: int, rank: int,
                 value: Any) -> int:
    """Owner secret-shares `value` and sends the peer its share; returns bytes sent."""
    sent = 0
    if owner == rank:
        shares = io.make_shares(value, libspu.Visibility.VIS_SECRET, owner)
        other = shares[1 - rank]
        lctx.send(1 - rank, other.meta)
        lctx.send(1 - rank, str(len(other.share_chunks)))
        for chunk in other.share_chunks:
            lctx.send(1 - rank, chunk)
            sent += len(chunk)
        rt.set_var(name, shares[rank])
    else:
        share = libspu.Share()
        share.meta = lctx.recv(owner)
        count = int(lctx.recv(owner))
        share.share_chunks = [lctx.recv(owner) for _ in range(count)]
        rt.set_var(name, share)
    return sent


def _swap_share(lctx: Any, libspu: Any, share: Any, rank: int, send: bool, recv: bool) -> Any:
    if send:
        lctx.send(1 - rank, share.meta)
        lctx.send(1 - rank, str(len(share.share_chunks)))
        for chunk in share.share_chunks:
            lctx.send(1 - rank, chunk)
    if not recv:
        return None
    theirs = libspu.Share()
    theirs.meta = lctx.recv(1 - rank)
    count = int(lctx.recv(1 - rank))
    theirs.share_chunks = [lctx.recv(1 - rank) for _ in range(count)]
    return theirs


def run(job: dict[str, Any], shares_raw: bytes) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import spu.api as spu_api
    import spu.libspu as libspu
    import spu.utils.frontend as spu_fe

    t_start, cpu_start = time.time(), time.process_time()
    rank = int(job["rank"])
    rows, columns = int(job["rows"]), list(job["columns"])
    plan = job["plan"]
    own = np.frombuffer(shares_raw, dtype="<u8").reshape(len(columns), rows).T.astype(np.uint64)
    own = np.ascontiguousarray(own).view(np.int64)  # the bit pattern is the ring element
    total_coins = max(1, sum(int(a["coins"]) for a in plan["aggregates"]))  # SPU needs >= 1
    bits = np.unpackbits(np.frombuffer(os.urandom((total_coins + 7) // 8), dtype=np.uint8))
    coins = bits[:total_coins].astype(np.int64)

    desc = libspu.link.Desc()
    for i, addr in enumerate(job["addresses"]):
        desc.add_party(f"veil-ppam-{i}", addr)
    desc.recv_timeout_ms = int(float(job.get("timeout_s", 600)) * 1000)
    desc.connect_retry_times = max(1, int(float(job.get("connect_timeout_s", 120)) / 0.5))
    desc.connect_retry_interval_ms = 500
    desc.throttle_window_size = 0
    tls = job.get("tls")
    if tls:
        # Mutual TLS pinned to the PSI certificates: each self-signed peer certificate is the
        # only CA trusted, for our client (the peer's server) and our server (its client).
        desc.enable_ssl = True
        for opts in (desc.client_ssl_opts, desc.server_ssl_opts):
            opts.cert.certificate_path = tls["cert"]
            opts.cert.private_key_path = tls["key"]
            opts.verify.ca_file_path = tls["peer_cert"]
            opts.verify.verify_depth = 1
    _emit(event="phase", name="link")
    try:
        lctx = libspu.link.create_brpc(desc, rank)
    except RuntimeError:
        raise WorkerError(
            "link", f"could not link with the peer at {job['addresses'][1 - rank]}: it is not "
            "running, or the TLS handshake failed (wrong --peer-cert, or the peer does not pin "
            "our certificate)") from None
    try:
        # Both sides must run the same computation on the same rows: compare a digest of the
        # plan, the column names and the row count before any data moves.
        digest = hashlib.sha256(json.dumps(
            {"plan": plan, "columns": columns, "rows": rows, "v": PROTOCOL_VERSION},
            sort_keys=True).encode()).hexdigest()
        theirs = lctx.all_gather(digest)
        if theirs[0] != theirs[1]:
            raise WorkerError("mismatch", "the peer's measurement plan, columns or row count "
                              "differ from ours (both must use the same run's share files and "
                              "the same --window/--cap/--metrics/--campaigns/--epsilon)")

        config = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.CHEETAH,
                                      field=libspu.FieldType.FM64)
        rt = spu_api.Runtime(lctx, config)
        io = spu_api.Io(2, config)
        _emit(event="phase", name="compile")
        fn = _ppam_function(plan, columns)
        spec = [np.zeros((rows, len(columns)), np.int64)] * 2 + [np.zeros(total_coins,
                                                                           np.int64)] * 2
        names = ["shares0", "shares1", "coins0", "coins1"]
        executable, _ = spu_fe.compile(
            spu_fe.Kind.JAX, fn, spec, {}, names, [libspu.Visibility.VIS_SECRET] * 4,
            lambda out: ["aggregates"])
        _emit(event="phase", name="input")
        for owner in (0, 1):
            _share_input(rt, io, lctx, libspu, f"shares{owner}", owner, rank,
                         own if owner == rank else None)
            _share_input(rt, io, lctx, libspu, f"coins{owner}", owner, rank,
                         coins if owner == rank else None)
        del own, coins
        _emit(event="phase", name="compute")
        t_run = time.time()
        rt.run(executable)
        run_s = time.time() - t_run
        mine = rt.get_var("aggregates")
        _emit(event="phase", name="reveal")
        reveal_to = job["reveal_to"]  # "both" or the rank told the result
        told = reveal_to == "both" or int(reveal_to) == rank
        peer_told = reveal_to == "both" or int(reveal_to) == 1 - rank
        # Lower rank sends first, so the two blocking exchanges cannot both wait.
        if rank == 0:
            _swap_share(lctx, libspu, mine, rank, send=peer_told, recv=False)
            theirs = _swap_share(lctx, libspu, mine, rank, send=False, recv=told)
        else:
            theirs = _swap_share(lctx, libspu, mine, rank, send=False, recv=told)
            _swap_share(lctx, libspu, mine, rank, send=peer_told, recv=False)
        values = None
        if told:
            pair = [mine, theirs] if rank == 0 else [theirs, mine]
            values = [int(v) for v in np.asarray(io.reconstruct(pair)).reshape(-1)]
        lctx.barrier()
        import resource

        stats = {
            "wall_s": time.time() - t_start,
            "mpc_run_s": run_s,
            "cpu_s": time.process_time() - cpu_start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "bytes_sent": _bytes_sent_by_me(),
            "coins": total_coins,
        }
        return {"values": values, "stats": stats}
    finally:
        lctx.stop_link()


def _short(exc: BaseException) -> str:
    """SPU's errors carry a C++ stack trace after the reason: keep the reason only."""
    text = str(exc).split("stacktrace:")[0].replace("what:", "").strip()
    return " ".join(text.split())[:300]


def main() -> int:
    global _events
    _events = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    try:
        line = stdin.readline(1 << 20)
        try:
            job = json.loads(line)
        except ValueError:
            raise WorkerError("input", "the first line is not a JSON job") from None
        if job.get("version") != PROTOCOL_VERSION:
            raise WorkerError("input", f"protocol version {job.get('version')!r} is not "
                              f"{PROTOCOL_VERSION}")
        size = int(job["rows"]) * len(job["columns"]) * 8
        raw = _read_exact(stdin, size)
        result = run(job, raw)
        _emit(event="result", **result)
        return 0
    except WorkerError as exc:
        _emit(event="error", kind=exc.kind, message=str(exc))
        return 2
    except Exception as exc:  # the parent needs a reason, not a traceback
        _emit(event="error", kind="engine", message=f"{type(exc).__name__}: {_short(exc)}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
