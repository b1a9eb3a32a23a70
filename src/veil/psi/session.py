"""The sans-I/O DPCA-PSI party: a state machine that takes the peer's messages and returns its own.

Both roles run the same steps (spec §2); at every step each party sends one message and
receives one. "Sender" only fixes who speaks first on the wire and who draws the common seed.

    party = PsiParty(config, data)
    out = party.start()
    while out is not None:
        out = party.receive(exchange(out))     # the transport's job
    result = party.result

Deviations from the reference (spec §12): ID hashes are domain-separated by column and by
kind (real / dummy / placeholder), so real rows can never match dummies and column c is only ever
compared with column c; masked payload ciphertexts are re-randomised; tau is never silently zero;
both parties cross-check the revealed sizes before finishing.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from veil.psi import _payload
from veil.psi.errors import (
    GroupError,
    InputError,
    InternalError,
    ParameterMismatch,
    PeerAborted,
    PeerLimitExceeded,
    ProtocolError,
    PsiError,
)
from veil.psi.groups import Group, RandomBytes, Scalar, get_group
from veil.psi.messages import (
    PROTOCOL_VERSION,
    Abort,
    Blinded,
    Buffer,
    Ciphertexts,
    Columns,
    Done,
    DoubleEncrypted,
    Hello,
    Masked,
    Message,
    Swapped,
)

Role = Literal["sender", "receiver"]
_M = TypeVar("_M", bound=Message)
Progress = Callable[[str], None]

COMPARE_BYTES = 16
"""Bytes kept of each doubly-encrypted element (collision chance about |I|^2 / 2^129)."""
MAX_IDS = 100
MAX_ROWS = 2**31
MAX_FEATURES = 1024
MAX_TAU = 2**20
_HASH_PREFIX = b"veil-psi/v1"
_KIND_REAL, _KIND_COMMON, _KIND_UNIQUE, _KIND_PLACEHOLDER = 0, 1, 2, 3
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class PsiConfig:
    """One party's parameters. Fields marked 'agree' must match the peer's or the run aborts."""

    role: Role
    group: str = "ristretto255"  # agree
    input_dp: bool = True  # agree: add IntersectMask dummies
    epsilon: float = 2.0
    queries: int = 10
    delta: float | None = None  # default 1/(10N)
    tau: int | None = None  # precomputed tau instead of computing it from (epsilon, queries)
    min_tau: int = 0  # raise the agreed tau to at least this
    zero_column: int | None = None  # own feature column forced to 0 on dummy rows
    reveal_intersection: bool = False  # agree; plain PSI only (k = 1, no DP): learn own matches
    packing: str = "masker"  # agree: who packs the masked payload rows (_payload.PACKING)
    statistical_security: int = 40  # agree
    paillier_bits: int = 2048
    max_peer_rows: int = 10_000_000  # policy: refuse a peer announcing more rows than this


@dataclass
class PartyData:
    """One party's records: k ID columns (normalised bytes; b"" = missing) and uint64 features."""

    ids: Sequence[Sequence[bytes]]
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint64))
    feature_names: Sequence[str] = ()


@dataclass(frozen=True)
class PsiResult:
    """What a party learns: noisy per-round sizes and its additive shares (mod 2^64)."""

    round_sizes: tuple[int, ...]
    tau: int
    shares: np.ndarray  # (|I|, f_sender + f_receiver) uint64, rows in ascending match-value order
    share_names: tuple[str, ...]  # "sender:<name>" ... then "receiver:<name>" ...
    peer_rows: int  # the peer's padded row count n'
    own_matches: np.ndarray | None = None  # own real row indices, only with reveal_intersection

    @property
    def intersection_size(self) -> int:
        return sum(self.round_sizes)


def _permutation(n: int, random_bytes: RandomBytes) -> np.ndarray:
    """A uniform random permutation: argsort of 64-bit keys from a CSPRNG (ties ~ n^2/2^65)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.frombuffer(random_bytes(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable")


def _truncate(elements: Buffer, size: int) -> np.ndarray:
    """The last COMPARE_BYTES of each element, as a V16 array (sortable, hashable by numpy)."""
    arr = np.frombuffer(elements, dtype=np.uint8).reshape(-1, size)
    return np.ascontiguousarray(arr[:, size - COMPARE_BYTES :]).view(f"V{COMPARE_BYTES}").ravel()


def _rows(buf: Buffer, size: int, index: np.ndarray) -> bytearray:
    """Gather the elements at `index` from a flat buffer into a new flat buffer."""
    arr = np.frombuffer(buf, dtype=np.uint8).reshape(-1, size)
    return bytearray(arr[index].tobytes())


def _hash_input(column: int, kind: int) -> bytes:
    return _HASH_PREFIX + struct.pack(">HB", column, kind)


def choose_common(tau: int, random_bytes: RandomBytes) -> np.ndarray:
    """Which tau of the 2tau common-pool IDs one party puts in a column (spec §4).

    Each party draws this privately; the round's dummy matches are the overlap of the two
    draws (Hypergeometric(2tau, tau, tau)). The leakage audit samples the noise through this
    same function so its simulation cannot drift from the protocol.
    """
    return _permutation(2 * tau, random_bytes)[:tau]


def _dummy_pool(seed: bytes, tau: int) -> list[bytes]:
    """The 2tau common identifiers, identical on both sides (derived from the sender's seed)."""
    stream = hashlib.shake_256(b"veil-psi/common-pool" + seed).digest(32 * tau)
    return [stream[16 * i : 16 * i + 16] for i in range(2 * tau)]


class PsiParty:
    """One party of a DPCA-PSI run (both roles run this class)."""

    def __init__(
        self,
        config: PsiConfig,
        data: PartyData,
        *,
        random_bytes: RandomBytes = os.urandom,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self._random = random_bytes
        self._progress = progress or (lambda phase: None)
        self._check_config()
        self.group: Group = get_group(config.group)
        self._ids, self._features, self._names = self._check_data(data)
        self._gen: Generator[Message, Message, PsiResult] | None = None
        self._result: PsiResult | None = None
        self._max_incoming = 1 << 16
        self.phase = "init"

    # -- public driving API -------------------------------------------------------------------

    def start(self) -> Message:
        """The first outgoing message (Hello)."""
        if self._gen is not None:
            raise ProtocolError("session already started")
        self._gen = self._protocol()
        out = self._step(None)
        if out is None:
            raise InternalError("the protocol ended before its first message")
        return out

    def receive(self, message: Message) -> Message | None:
        """Feed the peer's message for this step; returns the next outgoing one, None when done."""
        if self._gen is None or self._result is not None:
            raise ProtocolError("session is not running")
        if isinstance(message, Abort):
            self._gen = None
            raise PeerAborted(message.reason)
        return self._step(message)

    def _step(self, message: Message | None) -> Message | None:
        """Advance the protocol; any exception that is not a PsiError becomes InternalError.

        A stray IndexError or MemoryError deep in numpy must still end the run the typed way
        (the runtime sends an Abort for it), never as a traceback with the peer left waiting.
        """
        assert self._gen is not None
        try:
            return next(self._gen) if message is None else self._gen.send(message)
        except StopIteration as stop:
            self._result = stop.value
            return None
        except PsiError:
            self._gen = None
            raise
        except Exception as exc:
            self._gen = None
            raise InternalError(
                f"unexpected {type(exc).__name__} in phase {self.phase!r}: {exc}") from exc

    @property
    def result(self) -> PsiResult:
        if self._result is None:
            raise ProtocolError("session has not finished")
        return self._result

    @property
    def max_incoming(self) -> int:
        """Largest frame the next incoming message may legitimately be (for the transport)."""
        return self._max_incoming

    # -- validation -----------------------------------------------------------------------------

    def _check_config(self) -> None:
        c = self.config
        if c.role not in ("sender", "receiver"):
            raise InputError("role must be 'sender' or 'receiver'")
        if c.input_dp and c.tau is None and not (c.epsilon > 0 and math.isfinite(c.epsilon)):
            raise InputError("epsilon must be a positive finite number")
        if c.input_dp and c.tau is None and c.queries < 1:
            raise InputError("queries (T) must be at least 1")
        if c.tau is not None and not 0 <= c.tau <= MAX_TAU:
            raise InputError(f"tau must be in [0, {MAX_TAU}]")
        if not 0 <= c.min_tau <= MAX_TAU:
            raise InputError(f"min_tau must be in [0, {MAX_TAU}]")
        if c.delta is not None and not 0 < c.delta < 1:
            raise InputError("delta must be in (0, 1)")
        if not 40 <= c.statistical_security <= 80:
            raise InputError("statistical_security must be in [40, 80]")
        if c.paillier_bits not in _payload.ALLOWED_BITS:
            raise InputError(f"paillier_bits must be one of {_payload.ALLOWED_BITS}")
        if c.packing not in _payload.PACKING:
            raise InputError(f"packing must be one of {_payload.PACKING}")
        if not 1 <= c.max_peer_rows <= MAX_ROWS:
            raise InputError(f"max_peer_rows must be in [1, {MAX_ROWS}]")
        if c.reveal_intersection and c.input_dp:
            raise InputError("reveal_intersection is only for plain PSI (input_dp=False)")

    def _check_data(self, data: PartyData) -> tuple[list[list[bytes]], np.ndarray, tuple[str, ...]]:
        k = len(data.ids)
        if not 1 <= k <= MAX_IDS:
            raise InputError(f"need 1..{MAX_IDS} ID columns, got {k}")
        n = len(data.ids[0])
        if n > MAX_ROWS:
            raise InputError("too many rows")
        ids: list[list[bytes]] = []
        for c, col in enumerate(data.ids):
            if len(col) != n:
                raise InputError(f"ID column {c} has {len(col)} rows, expected {n}")
            values = [bytes(v) for v in col]
            present = [v for v in values if v]
            dupes = len(present) - len(set(present))
            if dupes:
                raise InputError(
                    f"ID column {c} has {dupes} duplicate value(s); IDs must be unique")
            ids.append(values)
        features = np.asarray(data.features)
        if features.size == 0:
            features = np.zeros((n, 0), dtype=np.uint64)
        if features.ndim != 2 or features.shape[0] != n:
            raise InputError(f"features must be an (n={n}, f) array")
        if features.dtype != np.uint64:
            if features.dtype.kind not in "iu" or (features.size and features.min() < 0):
                raise InputError("features must be non-negative integers below 2^64")
            features = features.astype(np.uint64)
        f = features.shape[1]
        if f > MAX_FEATURES:
            raise InputError(f"at most {MAX_FEATURES} features")
        names = tuple(data.feature_names) or tuple(f"f{i}" for i in range(f))
        if len(names) != f:
            raise InputError("feature_names must name every feature column")
        zc = self.config.zero_column
        if zc is not None and not -f <= zc < f:
            raise InputError("zero_column does not index a feature column")
        if self.config.reveal_intersection and k != 1:
            raise InputError("reveal_intersection needs exactly one ID column")
        return ids, features, names

    # -- the protocol ---------------------------------------------------------------------------

    def _protocol(self) -> Generator[Message, Message, PsiResult]:
        cfg, g = self.config, self.group
        es = g.element_size
        k = len(self._ids)
        n = len(self._ids[0])
        f = self._features.shape[1]
        is_sender = cfg.role == "sender"

        # Phase A/B: parameters, sizes, keys.
        self.phase = "hello"
        self._progress(self.phase)
        keys = _payload.generate_keys(cfg.paillier_bits) if f else None
        seed = self._random(16) if is_sender else b""
        hello = Hello(
            version=PROTOCOL_VERSION, is_sender=is_sender, group=g.name, ids=k,
            input_dp=cfg.input_dp, reveal_intersection=cfg.reveal_intersection,
            epsilon=float(cfg.epsilon), queries=cfg.queries,
            delta=float(cfg.delta or 0.0), tau_floor=cfg.tau if cfg.tau is not None else 0,
            min_tau=cfg.min_tau,
            rows=n, feature_names=self._names, packing=cfg.packing,
            statistical_security=cfg.statistical_security, paillier_bits=cfg.paillier_bits,
            public_key=keys.public_bytes() if keys else b"", seed=seed,
        )
        peer = self._expect((yield hello), Hello)
        peer_pk = self._check_hello(hello, peer)
        common_seed = bytes(seed if is_sender else peer.seed)
        tau = self._agree_tau(hello, peer) if cfg.input_dp else 0
        n_pad = n + k * tau
        peer_pad = peer.rows + k * tau
        f_peer = len(peer.feature_names)

        # Dummies (IntersectMask, spec §4) and the private row order.
        items, features = self._padded_rows(tau, common_seed)
        self._ids = []  # a session runs once; at N = 10^6 the ID lists are ~70 MB
        perm = _permutation(n_pad, self._random)
        keys_ec = [g.random_scalar(self._random) for _ in range(k)]

        # Round 1: all own columns under key_0; then the peer's column 0 under key_0 too.
        self.phase = "round 1"
        self._progress(self.phase)
        own_cols = bytearray()
        order0 = perm.tolist()
        for c in range(k):
            own_cols += g.exp(keys_ec[0], g.hash_to_group([items[c][i] for i in order0]))
            items[c] = []
        del items
        self._max_incoming = 16 + k * peer_pad * es
        cols = self._expect((yield Columns(own_cols)), Columns)
        if len(cols.elements) != k * peer_pad * es:
            raise ProtocolError("round-1 columns have the wrong size")
        peer_cols = memoryview(cols.elements)
        peer_col0 = peer_cols[: peer_pad * es]
        dbl = _truncate(self._exp(keys_ec[0], peer_col0), es)  # aligned to the peer's rows
        shuffle = _permutation(peer_pad, self._random)
        outgoing = dbl if cfg.reveal_intersection else dbl[shuffle]
        self._max_incoming = 16 + n_pad * COMPARE_BYTES
        back = self._expect((yield DoubleEncrypted(outgoing.tobytes())), DoubleEncrypted)
        if len(back.values) != n_pad * COMPARE_BYTES:
            raise ProtocolError("round-1 double encryptions have the wrong size")
        own_dbl = np.frombuffer(back.values, dtype=f"V{COMPARE_BYTES}")
        matched = np.isin(dbl, own_dbl)  # over the peer's rows
        match_value = dbl.copy()
        sizes = [int(matched.sum())]
        own_matches = None
        if cfg.reveal_intersection:
            hit = np.isin(own_dbl, dbl)
            rows = perm[np.flatnonzero(hit)]
            own_matches = np.sort(rows[rows < n])

        # Rounds 2..k: the cascade over still-unmatched rows, fresh key per column.
        for c in range(1, k):
            self.phase = f"round {c + 1}"
            self._progress(self.phase)
            unmatched = np.flatnonzero(~matched)
            sigma = _permutation(len(unmatched), self._random)
            order = unmatched[sigma]
            col_c = peer_cols[c * peer_pad * es : (c + 1) * peer_pad * es]
            blinded = self._exp(keys_ec[c], _rows(col_c, es, order))
            del col_c
            own_unmatched = n_pad - sum(sizes)
            self._max_incoming = 64 + 8 * k + own_unmatched * es
            peer_b = self._expect((yield Blinded(c, tuple(sizes), blinded)), Blinded)
            self._check_sizes(peer_b.sizes, sizes)
            if peer_b.round != c or len(peer_b.elements) != own_unmatched * es:
                raise ProtocolError(f"round {c + 1} blinded message has the wrong size")
            swap_key = g.scalar_mul(keys_ec[c], g.scalar_invert(keys_ec[0]))
            own_vals = _truncate(self._exp(swap_key, peer_b.elements), es)
            self._max_incoming = 32 + len(order) * COMPARE_BYTES
            peer_s = self._expect((yield Swapped(c, own_vals.tobytes())), Swapped)
            if peer_s.round != c or len(peer_s.values) != len(order) * COMPARE_BYTES:
                raise ProtocolError(f"round {c + 1} swapped message has the wrong size")
            theirs = np.frombuffer(peer_s.values, dtype=f"V{COMPARE_BYTES}")
            hit = np.isin(theirs, own_vals)
            matched[order[hit]] = True
            match_value[order[hit]] = theirs[hit]
            sizes.append(int(hit.sum()))

        del cols, peer_cols, peer_col0, back, own_dbl  # the round frames (~50 MB per 10^6 rows)

        # Phase E: payload, or just confirm the sizes.
        if f == 0 and f_peer == 0:
            self.phase = "finish"
            self._max_incoming = 16 + 8 * k
            done = self._expect((yield Done(tuple(sizes))), Done)
            self._check_sizes(done.sizes, sizes)
            shares = np.zeros((sum(sizes), 0), dtype=np.uint64)
        else:
            self.phase = "payload"
            self._progress(self.phase)
            pay = _payload.PayloadParams(cfg.paillier_bits, cfg.packing, cfg.statistical_security)
            ct = _payload.ciphertext_bytes(pay)
            hits = np.flatnonzero(matched)
            hits = hits[np.argsort(match_value[hits], kind="stable")]
            if len(np.unique(match_value[hits])) != len(hits):
                raise ProtocolError("duplicate match values; row order would be ambiguous")
            # Both sides stream their ciphertexts in lock-step chunks; only matched rows of the
            # peer's are kept, so neither side ever holds a whole ciphertext column.
            peer_rows = _payload.PeerCiphertexts(hits, peer_pad, f_peer, pay)
            own_features = features[perm]
            own_chunks = _payload.chunk_count(n_pad, f)
            steps = max(own_chunks, _payload.chunk_count(peer_pad, f_peer))
            for i in range(steps):
                expected = _payload.chunk_bytes(peer_pad, f_peer, i, pay)
                self._max_incoming = 64 + 8 * k + expected
                data = (_payload.encrypt_chunk(keys, own_features, i, pay)
                        if keys is not None and i < own_chunks else b"")
                peer_ct = self._expect((yield Ciphertexts(tuple(sizes), i, data)), Ciphertexts)
                del data
                self._check_sizes(peer_ct.sizes, sizes)
                if peer_ct.chunk != i or len(peer_ct.data) != expected:
                    raise ProtocolError("payload ciphertexts have the wrong size or order")
                if expected:
                    peer_rows.add(i, peer_ct.data)
                del peer_ct
            # Then the masked rows come back in lock-step batches, decrypted as they arrive.
            own_shares = np.zeros((len(hits), f), dtype=np.uint64)
            peer_shares = np.zeros((len(hits), f_peer), dtype=np.uint64)
            step = _payload.batch_rows(pay)
            for i, start in enumerate(range(0, len(hits), step)):
                count = min(step, len(hits) - start)
                data = b""
                if f_peer and peer_pk is not None:
                    try:
                        data, peer_shares[start : start + count] = _payload.mask(
                            peer_pk, peer_rows, start, count, pay)
                    except (ValueError, PsiError) as exc:
                        raise ProtocolError(f"invalid payload ciphertexts: {exc}") from None
                expected = _payload.masked_count(count, f, pay) * ct
                self._max_incoming = 32 + expected
                returned = self._expect((yield Masked(i, data)), Masked)
                del data
                if returned.chunk != i or len(returned.data) != expected:
                    raise ProtocolError("masked ciphertexts have the wrong size or order")
                if keys is not None:
                    try:
                        own_shares[start : start + count] = _payload.unmask(
                            keys, returned.data, count, f, pay)
                    except (ValueError, PsiError) as exc:
                        raise ProtocolError(f"invalid masked ciphertexts: {exc}") from None
                del returned
            del peer_rows
            parts = [own_shares, peer_shares] if is_sender else [peer_shares, own_shares]
            shares = np.hstack(parts).astype(np.uint64)

        self.phase = "done"
        self._progress(self.phase)
        s_names, r_names = (self._names, peer.feature_names) if is_sender else (
            peer.feature_names, self._names)
        names = tuple(f"sender:{x}" for x in s_names) + tuple(f"receiver:{x}" for x in r_names)
        return PsiResult(tuple(sizes), tau, shares, names, peer_pad, own_matches)

    # -- helpers --------------------------------------------------------------------------------

    def _exp(self, scalar: Scalar, elements: Buffer) -> bytearray:
        try:
            return self.group.exp(scalar, elements)
        except GroupError as exc:
            raise ProtocolError(f"peer sent invalid group elements: {exc}") from None

    @staticmethod
    def _expect(message: Message, kind: type[_M]) -> _M:
        if not isinstance(message, kind):
            raise ProtocolError(
                f"expected {kind.__name__}, got {type(message).__name__} (out of order)")
        return message

    @staticmethod
    def _check_sizes(theirs: Sequence[int], mine: Sequence[int]) -> None:
        if tuple(theirs) != tuple(mine):
            raise ProtocolError(
                "the parties disagree on the intersection sizes (inconsistent inputs?)")

    def _check_hello(self, mine: Hello, peer: Hello) -> _payload.PublicKey | None:
        def same(name: str) -> None:
            if getattr(mine, name) != getattr(peer, name):
                raise ParameterMismatch(
                    f"parameter mismatch: {name} is {getattr(mine, name)!r} here but "
                    f"{getattr(peer, name)!r} at the peer")

        same("version")
        if mine.is_sender == peer.is_sender:
            raise ParameterMismatch("both parties have the same role")
        for name in ("group", "ids", "input_dp", "reveal_intersection", "packing",
                     "statistical_security"):
            same(name)
        if peer.rows > self.config.max_peer_rows:
            # the peer's row count sets the frame limits of every later step
            raise PeerLimitExceeded(
                f"peer announced {peer.rows} rows; this party allows at most "
                f"{self.config.max_peer_rows} (PsiConfig.max_peer_rows, CLI --max-peer-rows)")
        if peer.rows > MAX_ROWS or len(peer.feature_names) > MAX_FEATURES:
            raise ProtocolError("peer sizes out of range")
        if peer.tau_floor > MAX_TAU or peer.min_tau > MAX_TAU:
            raise ParameterMismatch("peer tau out of range")
        if peer.is_sender and len(peer.seed) != 16:
            raise ProtocolError("sender's common seed must be 16 bytes")
        if not peer.is_sender and len(peer.seed):
            raise ProtocolError("receiver must not send a seed")
        if not peer.feature_names:
            if len(peer.public_key):
                raise ProtocolError("public key sent without features")
            return None
        if peer.paillier_bits not in _payload.ALLOWED_BITS:
            raise ParameterMismatch("peer Paillier modulus size not allowed")
        try:
            return _payload.load_public(peer.public_key, peer.paillier_bits)
        except (ValueError, PsiError) as exc:
            raise ProtocolError(f"invalid Paillier public key: {exc}") from None

    def _agree_tau(self, mine: Hello, peer: Hello) -> int:
        """tau = max over both parties' requirements: neither can lower the other's noise."""
        from veil.psi.tau import compute_tau

        n_max = max(mine.rows, peer.rows, 1)
        taus = []
        for h in (mine, peer):
            if h.tau_floor:
                taus.append(h.tau_floor)
                continue
            if not (h.epsilon > 0 and math.isfinite(h.epsilon)) or h.queries < 1:
                raise ParameterMismatch("a party's DP budget is invalid")
            try:
                taus.append(compute_tau(h.ids, h.queries, h.epsilon, n_max, h.delta or None))
            except (ValueError, PsiError) as exc:
                raise ParameterMismatch(f"a party's DP budget is invalid: {exc}") from None
        tau = max(*taus, mine.min_tau, peer.min_tau)
        if tau <= 0 or tau > MAX_TAU:
            raise ParameterMismatch(f"agreed tau {tau} is outside [1, {MAX_TAU}]")
        return tau

    def _padded_rows(self, tau: int, seed: bytes) -> tuple[list[list[bytes]], np.ndarray]:
        """Hash inputs of real rows then k*tau dummy rows per column, and the padded features."""
        k = len(self._ids)
        rnd = self._random
        items: list[list[bytes]] = []
        for c in range(k):
            real = _hash_input(c, _KIND_REAL)
            ph = _hash_input(c, _KIND_PLACEHOLDER)
            items.append([real + v if v else ph + rnd(16) for v in self._ids[c]])
        if tau:
            pool = _dummy_pool(seed, tau)
            for c in range(k):
                common = _hash_input(c, _KIND_COMMON)
                unique = _hash_input(c, _KIND_UNIQUE)
                chosen = choose_common(tau, rnd)
                col: list[bytes] = []
                for block in range(k):
                    if block == c:
                        col.extend(common + pool[i] for i in chosen)
                    else:
                        col.extend(unique + rnd(16) for _ in range(tau))
                items[c].extend(col)
        # Pad the features whenever there are dummies, even with no feature columns (f = 0):
        # the payload phase indexes them by the padded row order, and a party with no
        # features still takes part when only its peer has some.
        features = self._features
        f = features.shape[1]
        if tau:
            dummy = np.zeros((k * tau, f), dtype=np.uint64)
            if f:
                dummy[:] = np.frombuffer(rnd(8 * k * tau * f), dtype=np.uint64).reshape(k * tau, f)
                if self.config.zero_column is not None:
                    dummy[:, self.config.zero_column] = 0
            features = np.vstack([features, dummy])
        return items, features
