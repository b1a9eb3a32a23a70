"""Paillier (DJN + CRT) and the payload phase: correctness, interop with `phe`, unlinkability."""

from __future__ import annotations

import secrets
import struct

import gmpy2
import numpy as np
import pytest
from phe import paillier as phe

from veil.psi.errors import ProtocolError, PsiError
from veil.psi.paillier import (
    CiphertextVector,
    KeyMismatchError,
    MalformedPaillierData,
    PackingLayout,
    PaillierPrivateKey,
    PaillierPublicKey,
    PlaintextRangeError,
    encrypt_payload,
    generate_keypair,
    mask_and_pack,
    mask_rows,
    owner_slots,
    pack_and_decrypt,
    unpack_and_decrypt,
)

U64_MAX = 2**64 - 1
Keys = tuple[PaillierPublicKey, PaillierPrivateKey]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return generate_keypair(2048)


@pytest.fixture(scope="module")
def other_keys() -> Keys:
    return generate_keypair(2048)


@pytest.fixture(scope="module")
def keys3072() -> Keys:
    return generate_keypair(3072)


def _ct(vec: CiphertextVector) -> list[int]:
    w = vec.public_key.ciphertext_bytes
    return [int.from_bytes(vec.buffer[i : i + w], "big") for i in range(0, len(vec.buffer), w)]


# --- keys -------------------------------------------------------------------------------------


def test_keygen_structure(keys: Keys) -> None:
    pk, sk = keys
    p, q = sk.private_numbers()
    assert pk.n_bits == 2048 and int(pk.n) == p * q
    assert p % 4 == 3 and q % 4 == 3
    assert gmpy2.gcd(p - 1, q - 1) == 2
    assert abs(p - q) > 2 ** (1024 - 100)
    assert gmpy2.is_prime(p) and gmpy2.is_prime(q)
    # h_s is an n-th residue, so h_s^alpha is an encryption of zero
    assert sk.decrypt_vector(CiphertextVector._from_ints(pk, [pk.hs])) == [0]
    assert pk.exponent_bits == 224 and pk.ciphertext_bytes == 512


def test_keygen_3072(keys3072: Keys) -> None:
    pk, sk = keys3072
    assert pk.n_bits == 3072 and pk.exponent_bits == 256 and pk.ciphertext_bytes == 768
    values = [0, 1, U64_MAX, int(pk.n) - 1]
    assert sk.decrypt_vector(pk.encrypt_vector(values)) == values


@pytest.mark.parametrize("bits", [512, 1024, 2047, 4096])
def test_keygen_rejects_unsupported_sizes(bits: int) -> None:
    with pytest.raises(ValueError, match="n_bits"):
        generate_keypair(bits)


def test_private_key_repr_hides_factors(keys: Keys) -> None:
    _, sk = keys
    assert str(sk.private_numbers()[0]) not in repr(sk)


# --- interoperability with python-paillier (phe) ----------------------------------------------


def test_phe_decrypts_ours_and_we_decrypt_phe(
    keys: Keys,
) -> None:
    pk, sk = keys
    p, q = sk.private_numbers()
    phe_pk = phe.PaillierPublicKey(int(pk.n))
    phe_sk = phe.PaillierPrivateKey(phe_pk, p, q)
    values = [0, 1, 42, U64_MAX, 2**1000 + 7, int(pk.n) - 1]
    ours = pk.encrypt_vector(values)
    assert [phe_sk.raw_decrypt(c) for c in _ct(ours)] == values
    theirs = CiphertextVector._from_ints(pk, [phe_pk.raw_encrypt(v) for v in values])
    assert sk.decrypt_vector(theirs) == values
    assert sk.decrypt_vector(theirs, crt=False) == values


# --- encryption, decryption and homomorphic operations -----------------------------------------


def test_roundtrip_crt_and_textbook(keys: Keys) -> None:
    pk, sk = keys
    values = [0, 1, U64_MAX, int(pk.n) - 1, *[secrets.randbelow(int(pk.n)) for _ in range(20)]]
    enc = pk.encrypt_vector(values)
    assert len(enc) == len(values) and len(enc.buffer) == len(values) * 512
    assert sk.decrypt_vector(enc) == values
    assert sk.decrypt_vector(enc, crt=False) == values


def test_owner_crt_encryption_is_the_public_encryption(
    keys: Keys, keys3072: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same alpha -> the very same ciphertext: the CRT path changes the cost, not the scheme.
    for pk, sk in (keys, keys3072):
        values = [0, 1, U64_MAX, int(pk.n) - 1]
        alpha = secrets.randbits(pk.exponent_bits)
        monkeypatch.setattr(secrets, "randbits", lambda bits, a=alpha: a)
        public, owner = pk.encrypt_vector(values), sk.encrypt_vector(values)
        monkeypatch.undo()
        assert _ct(owner) == _ct(public)


def test_owner_crt_encryption_decrypts_here_and_in_phe(keys: Keys) -> None:
    pk, sk = keys
    p, q = sk.private_numbers()
    phe_sk = phe.PaillierPrivateKey(phe.PaillierPublicKey(int(pk.n)), p, q)
    values = [0, 5, U64_MAX, *[secrets.randbits(64) for _ in range(30)]]
    enc = encrypt_payload(sk, np.array(values, dtype=np.uint64))
    assert enc.public_key == pk and len(set(_ct(enc))) == len(values)
    assert sk.decrypt_vector(enc) == values
    assert [phe_sk.raw_decrypt(c) for c in _ct(enc)] == values
    with pytest.raises(PlaintextRangeError):
        encrypt_payload(sk, [2**64])


def test_encryption_is_randomised(keys: Keys) -> None:
    pk, _ = keys
    a, b = pk.encrypt_vector([7, 7]), pk.encrypt_vector([7])
    cts = _ct(a) + _ct(b)
    assert len(set(cts)) == 3


def test_numpy_input_and_parallel_workers(
    keys: Keys,
) -> None:
    pk, sk = keys
    values = np.array([secrets.randbits(64) for _ in range(130)], dtype=np.uint64)
    enc = pk.encrypt_vector(values, workers=2)
    assert sk.decrypt_vector(enc, workers=2) == values.tolist()
    assert sk.decrypt_vector(enc, workers=1) == values.tolist()


@pytest.mark.parametrize("workers", [0, -1, True, 1.5])
def test_bad_workers(keys: Keys, workers: object) -> None:
    pk, _ = keys
    with pytest.raises(ValueError, match="workers"):
        pk.encrypt_vector([1], workers=workers)  # type: ignore[arg-type]


def test_homomorphic_add(keys: Keys) -> None:
    pk, sk = keys
    n = int(pk.n)
    a, b = [1, U64_MAX, n - 1, 0], [2, 1, 2, 0]
    total = pk.encrypt_vector(a).add(pk.encrypt_vector(b))
    assert sk.decrypt_vector(total) == [(x + y) % n for x, y in zip(a, b, strict=True)]


def test_add_plain_and_mul_const(keys: Keys) -> None:
    pk, sk = keys
    n = int(pk.n)
    a = [5, U64_MAX, n - 1]
    enc = pk.encrypt_vector(a)
    assert sk.decrypt_vector(enc.add_plain([3, 1, 1])) == [8, 2**64, 0]
    assert sk.decrypt_vector(enc.mul_const([2, 3, 0])) == [10, 3 * U64_MAX, 0]
    assert sk.decrypt_vector(enc.mul_const(n - 1)) == [(x * (n - 1)) % n for x in a]


def test_rerandomize_keeps_plaintext_breaks_link(
    keys: Keys,
) -> None:
    pk, sk = keys
    n = int(pk.n)
    enc = pk.encrypt_vector([0, 9, U64_MAX])
    fresh = enc.rerandomize()
    assert sk.decrypt_vector(fresh) == [0, 9, U64_MAX]
    before, after = _ct(enc), _ct(fresh)
    assert not set(before) & set(after)
    assert not {c % n for c in before} & {c % n for c in after}


def test_add_plain_without_rerandomisation_is_linkable(
    keys: Keys,
) -> None:
    """What the reference does (spec §12.1): c * (1 + n m) keeps c mod n. Default avoids it."""
    pk, _ = keys
    n = int(pk.n)
    enc = pk.encrypt_vector([3, 4])
    linkable = enc.add_plain([10, 20], rerandomize=False)
    assert [c % n for c in _ct(linkable)] == [c % n for c in _ct(enc)]
    safe = enc.add_plain([10, 20])
    assert not {c % n for c in _ct(safe)} & {c % n for c in _ct(enc)}


def test_select_and_concat(keys: Keys) -> None:
    pk, sk = keys
    enc = pk.encrypt_vector([10, 11, 12, 13])
    assert sk.decrypt_vector(enc.select([3, 0, 0])) == [13, 10, 10]
    assert len(enc.select([])) == 0
    both = CiphertextVector.concat([enc.select([1]), enc.select([2])])
    assert sk.decrypt_vector(both) == [11, 12]
    with pytest.raises(IndexError):
        enc.select([4])
    with pytest.raises(IndexError):
        enc.select([-1])
    with pytest.raises(ValueError):
        CiphertextVector.concat([])


@pytest.mark.parametrize(
    "values",
    [[-1], ["n"], [2**4000], [1.0], [True], [None]],
    ids=["negative", "modulus", "huge", "float", "bool", "none"],
)
def test_plaintext_range_errors(keys: Keys, values: list[object]) -> None:
    pk, _ = keys
    if values == ["n"]:
        values = [int(pk.n)]
    with pytest.raises(PlaintextRangeError):
        pk.encrypt_vector(values)  # type: ignore[arg-type]


def test_operand_errors(keys: Keys) -> None:
    pk, _ = keys
    enc = pk.encrypt_vector([1, 2])
    with pytest.raises(ValueError, match="length"):
        enc.add(pk.encrypt_vector([1]))
    with pytest.raises(ValueError, match="length"):
        enc.add_plain([1])
    with pytest.raises(ValueError, match="length"):
        enc.mul_const([1, 2, 3])
    with pytest.raises(PlaintextRangeError):
        enc.mul_const(-1)
    with pytest.raises(PlaintextRangeError):
        enc.add_plain([0, int(pk.n)])


def test_key_mismatch(
    keys: Keys,
    other_keys: Keys,
) -> None:
    (pk, _), (pk2, sk2) = keys, other_keys
    enc, enc2 = pk.encrypt_vector([1]), pk2.encrypt_vector([1])
    with pytest.raises(KeyMismatchError):
        enc.add(enc2)
    with pytest.raises(KeyMismatchError):
        sk2.decrypt_vector(enc)
    with pytest.raises(KeyMismatchError):
        CiphertextVector.from_bytes(pk2, enc.to_bytes())
    with pytest.raises(KeyMismatchError):
        mask_and_pack(pk2, enc)
    packed, _ = mask_and_pack(pk, enc)
    with pytest.raises(KeyMismatchError):
        unpack_and_decrypt(sk2, packed, 1)
    assert isinstance(KeyMismatchError("x"), PsiError)


# --- serialisation ------------------------------------------------------------------------------


def test_public_key_roundtrip(keys: Keys) -> None:
    pk, sk = keys
    data = pk.to_bytes()
    assert len(data) == 7 + 3 * 256
    pk2 = PaillierPublicKey.from_bytes(data)
    assert pk2 == pk and pk2.key_id == pk.key_id
    wire = pk2.encrypt_vector([5]).to_bytes()
    assert sk.decrypt_vector(CiphertextVector.from_bytes(pk, wire)) == [5]


def _pk_bytes(n_bits: int, n: int, hs: int, nb: int | None = None) -> bytes:
    nb = nb or n_bits // 8
    header = struct.pack(">4sBH", b"VPPK", 1, n_bits)
    return header + n.to_bytes(nb, "big") + hs.to_bytes(2 * nb, "big")


def test_public_key_malformed(keys: Keys) -> None:
    pk, _ = keys
    good, n, hs = pk.to_bytes(), int(pk.n), int(pk.hs)
    cases = {
        "empty": b"",
        "truncated": good[:-1],
        "extra": good + b"\0",
        "magic": b"XXXX" + good[4:],
        "version": good[:4] + b"\x02" + good[5:],
        "size1024": _pk_bytes(1024, n, hs, nb=256),
        "header_lies": struct.pack(">4sBH", b"VPPK", 1, 3072) + good[7:],
        "short_modulus": _pk_bytes(2048, n >> 8, hs),
        "even_modulus": _pk_bytes(2048, n + 1, hs),
        "hs_zero": _pk_bytes(2048, n, 0),
        "hs_one": _pk_bytes(2048, n, 1),
        "hs_not_unit": _pk_bytes(2048, n, n),
        "hs_too_big": _pk_bytes(2048, n, n * n + 1),
    }
    for name, data in cases.items():
        with pytest.raises(MalformedPaillierData):
            PaillierPublicKey.from_bytes(data)
            pytest.fail(name)
    with pytest.raises(MalformedPaillierData):
        PaillierPublicKey.from_bytes("text")  # type: ignore[arg-type]
    assert issubclass(MalformedPaillierData, ProtocolError)


def test_ciphertext_vector_roundtrip(keys: Keys) -> None:
    pk, sk = keys
    enc = pk.encrypt_vector([0, U64_MAX, 3])
    data = enc.to_bytes()
    assert len(data) == 17 + 3 * 512
    back = CiphertextVector.from_bytes(pk, data)
    assert back.buffer == enc.buffer and sk.decrypt_vector(back) == [0, U64_MAX, 3]
    empty = pk.encrypt_vector([])
    assert len(CiphertextVector.from_bytes(pk, empty.to_bytes())) == 0


def test_ciphertext_vector_malformed(keys: Keys) -> None:
    pk, _ = keys
    good = pk.encrypt_vector([1, 2]).to_bytes()
    header = good[:17]
    n2 = int(pk.n) ** 2
    bad_count = header[:13] + struct.pack(">I", 3) + good[17:]
    cases = {
        "empty": b"",
        "short_header": good[:10],
        "truncated": good[:-1],
        "extra": good + b"\0",
        "count_lies": bad_count,
        "magic": b"ABCD" + good[4:],
        "version": good[:4] + b"\x09" + good[5:],
        "zero_ct": header + bytes(512) + good[17 + 512 :],
        "ct_ge_n2": header + n2.to_bytes(512, "big") + good[17 + 512 :],
    }
    for name, data in cases.items():
        with pytest.raises(MalformedPaillierData):
            CiphertextVector.from_bytes(pk, data)
            pytest.fail(name)
    with pytest.raises(MalformedPaillierData):
        CiphertextVector.from_bytes(pk, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(MalformedPaillierData):
        CiphertextVector(pk, b"\1" * 511)


def test_raw_buffer_constructor_checks_range(keys: Keys) -> None:
    pk, sk = keys
    enc = pk.encrypt_vector([4, 5])
    assert sk.decrypt_vector(CiphertextVector(pk, bytearray(enc.buffer))) == [4, 5]
    assert sk.decrypt_vector(CiphertextVector(pk, memoryview(enc.buffer))) == [4, 5]
    n2 = int(pk.n) ** 2
    for bad in (bytes(512), n2.to_bytes(512, "big"), (n2 + 5).to_bytes(512, "big")):
        with pytest.raises(MalformedPaillierData, match="range"):
            CiphertextVector(pk, enc.buffer + bad)
    with pytest.raises(MalformedPaillierData, match="bytes"):
        CiphertextVector(pk, "x" * 512)  # type: ignore[arg-type]


# --- payload phase: masking, packing, shares -----------------------------------------------------


def test_layout(
    keys: Keys,
    keys3072: Keys,
) -> None:
    lay = PackingLayout.for_key(keys[0])
    assert (lay.slot_bits, lay.slots) == (105, 19)
    assert lay.packed_count(0) == 0 and lay.packed_count(19) == 1 and lay.packed_count(20) == 2
    assert PackingLayout.for_key(keys3072[0]).slots == 29
    assert PackingLayout.for_key(keys[0], 80).slots == (2047 // 145)
    assert PackingLayout.for_key(keys[0], packing=False).slots == 1


@pytest.mark.parametrize("sigma", [39, 81, True, 40.0])
def test_layout_rejects_bad_sigma(keys: Keys, sigma: object) -> None:
    with pytest.raises(ValueError, match="statistical_bits"):
        PackingLayout.for_key(keys[0], sigma)  # type: ignore[arg-type]


def _reconstruct(a: np.ndarray, b: np.ndarray) -> list[int]:
    assert a.dtype == np.uint64 and b.dtype == np.uint64
    return (a + b).tolist()  # uint64 addition wraps mod 2^64


@pytest.mark.parametrize("count", [0, 1, 18, 19, 20, 38, 39, 45])
def test_mask_pack_shares_reconstruct(keys: Keys, count: int) -> None:
    pk, sk = keys
    edge = [0, U64_MAX, 1, 2**63, U64_MAX - 1]
    values = (edge + [secrets.randbits(64) for _ in range(count)])[:count]
    enc = encrypt_payload(pk, values)
    packed, mine = mask_and_pack(pk, enc)
    assert len(packed) == -(-count // 19) and len(mine) == count
    theirs = unpack_and_decrypt(sk, packed, count)
    assert _reconstruct(mine, theirs) == values


def test_mask_pack_selected_rows_in_order(
    keys: Keys,
) -> None:
    pk, sk = keys
    values = [secrets.randbits(64) for _ in range(30)] + [U64_MAX, 0]
    enc = encrypt_payload(pk, values)
    rows = [31, 30, 5, 17, 2, 29, 0, 31]
    packed, mine = mask_and_pack(pk, enc.select(rows))
    # the owner receives bytes
    wire = CiphertextVector.from_bytes(pk, packed.to_bytes())
    theirs = unpack_and_decrypt(sk, wire, len(rows))
    assert _reconstruct(mine, theirs) == [values[r] for r in rows]


@pytest.mark.parametrize(("sigma", "packing"), [(80, True), (40, False), (60, False)])
def test_mask_pack_variants(keys: Keys, sigma: int, packing: bool) -> None:
    pk, sk = keys
    values = [U64_MAX, 0, *[secrets.randbits(64) for _ in range(20)]]
    packed, mine = mask_and_pack(
        pk, encrypt_payload(pk, values), statistical_bits=sigma, packing=packing
    )
    lay = PackingLayout.for_key(pk, sigma, packing=packing)
    assert len(packed) == lay.packed_count(len(values))
    theirs = unpack_and_decrypt(sk, packed, len(values), statistical_bits=sigma, packing=packing)
    assert _reconstruct(mine, theirs) == values


def test_mask_pack_3072(keys3072: Keys) -> None:
    pk, sk = keys3072
    values = [U64_MAX] * 29 + [0]
    packed, mine = mask_and_pack(pk, encrypt_payload(pk, values))
    assert len(packed) == 2
    assert _reconstruct(mine, unpack_and_decrypt(sk, packed, 30)) == values


def test_mask_pack_parallel(keys: Keys) -> None:
    pk, sk = keys
    values = [secrets.randbits(64) for _ in range(19 * 70)]
    enc = encrypt_payload(pk, values, workers=2)
    packed, mine = mask_and_pack(pk, enc, workers=2)
    assert _reconstruct(mine, unpack_and_decrypt(sk, packed, len(values), workers=2)) == values


def test_shares_look_uniform_not_values(keys: Keys) -> None:
    """Neither share equals the value; masker's shares differ across runs on the same input."""
    pk, _ = keys
    enc = encrypt_payload(pk, [0] * 19)
    _, mine1 = mask_and_pack(pk, enc)
    _, mine2 = mask_and_pack(pk, enc)
    assert (mine1 != 0).all() and (mine1 != mine2).any()


@pytest.mark.parametrize("values", [[2**64], [-1], [U64_MAX + 5]])
def test_encrypt_payload_rejects_non_u64(keys: Keys, values: list[int]) -> None:
    with pytest.raises(PlaintextRangeError, match="2\\^64"):
        encrypt_payload(keys[0], values)


def test_unpack_rejects_bad_count_and_tampering(
    keys: Keys,
) -> None:
    pk, sk = keys
    packed, _ = mask_and_pack(pk, encrypt_payload(pk, [1] * 20))
    for count in (0, 19, 39):
        with pytest.raises(MalformedPaillierData, match="packed ciphertexts"):
            unpack_and_decrypt(sk, packed, count)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="count"):
            unpack_and_decrypt(sk, packed, bad)  # type: ignore[arg-type]
    # a "packed" plaintext wider than its slots cannot come from an honest masker
    forged = pk.encrypt_vector([1 << (105 * 19)])
    with pytest.raises(MalformedPaillierData, match="overflows"):
        unpack_and_decrypt(sk, forged, 19)
    forged_last = pk.encrypt_vector([1 << 105])
    with pytest.raises(MalformedPaillierData, match="overflows"):
        unpack_and_decrypt(sk, forged_last, 1)


# --- owner-side packing (the faster option) ---------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 8, 9, 10, 40])
def test_owner_packing_shares_reconstruct(keys: Keys, count: int) -> None:
    pk, sk = keys
    assert owner_slots(sk, 40) == 9 and owner_slots(sk, 80) == 7
    values = ([U64_MAX, 0, 2**63] + [secrets.randbits(64) for _ in range(count)])[:count]
    back, mine = mask_rows(pk, encrypt_payload(sk, values))
    assert len(back) == count and len(mine) == count  # one ciphertext per row goes back
    theirs = pack_and_decrypt(sk, back, workers=2 if count > 9 else 1)
    assert _reconstruct(mine, theirs) == values


def test_owner_packing_3072_and_sigma(keys3072: Keys) -> None:
    pk, sk = keys3072
    values = [U64_MAX] * 15 + [0, 5]
    assert owner_slots(sk, 40) == 14
    back, mine = mask_rows(pk, encrypt_payload(sk, values), statistical_bits=60)
    assert _reconstruct(mine, pack_and_decrypt(sk, back, statistical_bits=60)) == values


def test_owner_packing_rows_unlinkable_and_tampering_refused(keys: Keys, other_keys: Keys) -> None:
    pk, sk = keys
    n = int(pk.n)
    enc = encrypt_payload(sk, [3] * 12)
    sent = _ct(enc)
    back = _ct(mask_rows(pk, enc)[0])
    assert not {c % n for c in back} & {c % n for c in sent}  # re-randomised, row by row
    assert len(set(back)) == 12
    with pytest.raises(MalformedPaillierData, match="overflows"):
        pack_and_decrypt(sk, pk.encrypt_vector([1 << 105]))  # a row wider than its slot
    with pytest.raises(KeyMismatchError):
        mask_rows(other_keys[0], enc)
    with pytest.raises(KeyMismatchError):
        pack_and_decrypt(other_keys[1], enc)


# --- unlinkability (spec §12.1) -------------------------------------------------------------------


def _fingerprint(pk: PaillierPublicKey, cts: list[int]) -> int:
    """What the owner can compute from its own ciphertexts for one packed group, mod n.

    Without re-randomisation the masker returns prod c_j^(2^(s*(g-1-j))) * (1 + n R), which is
    congruent mod n to this value: the owner would recognise it.
    """
    n, n2, shift = int(pk.n), int(pk.n) ** 2, 1 << 105
    acc = cts[0]
    for c in cts[1:]:
        acc = pow(acc, shift, n2) * c % n2
    return acc % n


def _insecure_mask_and_pack(pk: PaillierPublicKey, enc: CiphertextVector) -> list[int]:
    """The reference's behaviour: masks added as c * (1 + n R), no fresh randomness."""
    n, n2, shift = int(pk.n), int(pk.n) ** 2, 1 << 105
    out = []
    cts = _ct(enc)
    for g in range(0, len(cts), 19):
        group = cts[g : g + 19]
        acc, total = group[0], 0
        for c in group[1:]:
            acc = pow(acc, shift, n2) * c % n2
        for _ in group:
            total = (total << 105) + (1 << 64) + secrets.randbits(64)
        out.append(acc * (1 + n * total) % n2)
    return out


def test_returned_ciphertexts_unlinkable(keys: Keys) -> None:
    pk, _ = keys
    n = int(pk.n)
    enc = encrypt_payload(pk, list(range(38)))
    sent = _ct(enc)
    packed = _ct(mask_and_pack(pk, enc)[0])
    assert not set(packed) & set(sent)
    assert not {c % n for c in packed} & {c % n for c in sent}
    expected_if_linkable = [_fingerprint(pk, sent[0:19]), _fingerprint(pk, sent[19:38])]
    assert [c % n for c in packed] != expected_if_linkable
    assert not {c % n for c in packed} & set(expected_if_linkable)
    # the attack does work against the reference's construction: the test can fail
    insecure = _insecure_mask_and_pack(pk, enc)
    assert [c % n for c in insecure] == expected_if_linkable


def test_distinguisher_cannot_tell_which_rows_were_selected(
    keys: Keys,
) -> None:
    """Owner sends rows; masker selects candidate A or B (same values). Equality matching of
    the owner's fingerprints against the returned ciphertexts identifies neither."""
    pk, _ = keys
    n = int(pk.n)
    enc = encrypt_payload(pk, [7] * 40)
    sent = _ct(enc)
    cand_a, cand_b = list(range(0, 19)), list(range(20, 39))
    fp = {
        "A": _fingerprint(pk, [sent[i] for i in cand_a]),
        "B": _fingerprint(pk, [sent[i] for i in cand_b]),
    }
    for chosen in (cand_a, cand_b):
        returned = _ct(mask_and_pack(pk, enc.select(chosen))[0])[0] % n
        assert [k for k, v in fp.items() if v == returned] == []
        insecure = _insecure_mask_and_pack(pk, enc.select(chosen))[0] % n
        matches = [k for k, v in fp.items() if v == insecure]
        assert matches == (["A"] if chosen is cand_a else ["B"])


def test_same_input_masked_twice_differs(keys: Keys) -> None:
    pk, _ = keys
    n = int(pk.n)
    enc = encrypt_payload(pk, [1, 2, 3])
    first, second = _ct(mask_and_pack(pk, enc)[0]), _ct(mask_and_pack(pk, enc)[0])
    assert first[0] != second[0] and first[0] % n != second[0] % n


def _owner_with_small_order_base() -> tuple[Keys, int]:
    """A malicious owner's key: honest n, but h_s of small odd order l (l | p - 1) mod p^2
    and 1 mod q^2. It passes key validation (only the factorisation shows its order)."""
    while True:
        pk, sk = generate_keypair(2048)
        p, q = int(sk.p), int(sk.q)
        small = [ell for ell in (3, 5, 7, 11, 13) if (p - 1) % ell == 0]
        if small:
            break
    ell, p2, q2 = small[0], p * p, q * q
    while True:
        a = pow(secrets.randbelow(p2 - 2) + 2, p * (p - 1) // ell, p2)
        if a != 1:
            break
    hs = a + p2 * ((1 - a) * pow(p2, -1, q2) % q2)  # CRT: a mod p^2, 1 mod q^2
    bad = PaillierPublicKey(pk.n, hs)
    return (bad, PaillierPrivateKey(bad, sk.p, sk.q)), ell


def test_degenerate_djn_base_refused(keys: Keys) -> None:
    pk, _ = keys
    for hs in (pk.n2 - 1, 1 + 0 * pk.n):
        with pytest.raises(MalformedPaillierData):
            PaillierPublicKey(pk.n, hs)
    blob = bytearray(pk.to_bytes())
    blob[-pk.ciphertext_bytes:] = int(pk.n2 - 1).to_bytes(pk.ciphertext_bytes, "big")
    with pytest.raises(MalformedPaillierData, match="order at most 2"):
        PaillierPublicKey.from_bytes(bytes(blob))


def test_malicious_owner_base_cannot_link_masked_rows() -> None:
    """Audit item 2: with re-randomisation by h_s^alpha, c'/(c (1+n)^(m'-m)) = h_s^alpha lies in
    <h_s> (order l) and the owner links every returned row; with the masker's r^n it does not."""
    (pk, sk), ell = _owner_with_small_order_base()
    n, n2 = int(pk.n), int(pk.n2)
    values = [secrets.randbits(64) for _ in range(12)]
    enc = encrypt_payload(sk, values)
    masked, masker_shares = mask_rows(pk, enc)
    before, after = _ct(enc), _ct(masked)
    plain_before, plain_after = sk.decrypt_vector(enc), sk.decrypt_vector(masked)
    for c, c2, m, m2 in zip(before, after, plain_before, plain_after, strict=True):
        y = c2 * pow(c, -1, n2) * pow(1 + n * ((m2 - m) % n), -1, n2) % n2
        assert pow(y, ell, n2) != 1  # not in <h_s>: the link test fails on every row
    owner = pack_and_decrypt(sk, masked)
    assert ((owner.astype(object) + masker_shares.astype(object)) % 2**64).tolist() == values
    # The same link test does succeed on ciphertexts re-randomised with h_s only:
    djn_only = [c * pk._randomiser() % n2 for c in before]
    for c, c2 in zip(before, djn_only, strict=True):
        assert pow(c2 * pow(c, -1, n2) % n2, ell, n2) == 1
    packed, shares = mask_and_pack(pk, enc)
    total = (unpack_and_decrypt(sk, packed, len(values)).astype(object)
             + shares.astype(object)) % 2**64
    assert total.tolist() == values
