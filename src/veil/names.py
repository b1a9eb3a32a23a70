"""The names Veil accepts and the storage keys built from them, in one place.

Every grammar is matched whole with ``fullmatch``: a ``^…$`` pattern with ``re.match`` also
accepts a name followed by a newline, because ``$`` matches just before a trailing ``\\n``.

| grammar          | used for                                        | example              |
|------------------|-------------------------------------------------|----------------------|
| ``PARTY``        | parties, users, dataset short names, consumers  | ``hospital``         |
| ``DATASET_REF``  | a dataset as jobs name it: ``owner/name``       | ``hospital/visits``  |
| ``BUNDLE_FILE``  | files in a job bundle                           | ``Untitled.ipynb``   |
| ``OUTPUT``       | published outputs and their files               | ``Total``            |
| ``BACKEND``      | secure-stage backends                           | ``local-sandbox``    |
| ``BLOB_KEY``     | keys in the blob store                          | ``jobs/…/outputs/n`` |

Blob keys are lowercase so that two keys never collide on a case-insensitive file system
or object store. Mixed-case names (bundle files, outputs) are therefore *encoded* into a
key segment: the lowercased name, then ``~`` and the positions of its capitals as a hex
bit mask (``Total`` → ``total~1``, ``toTAL`` → ``total~1c``). No name grammar allows ``~``,
so the encoding is injective; lowercase names keep the keys they always had; and the longest
segment (161 characters) leaves room for the store's staging names under the usual
255-byte file name limit.
"""

from __future__ import annotations

import re

from veil.errors import VeilError

__all__ = [
    "BACKEND",
    "BLOB_KEY",
    "BUNDLE_FILE",
    "DATASET_REF",
    "OUTPUT",
    "PARTY",
    "InvalidName",
    "bundle_blob_key",
    "check_backend",
    "check_blob_key",
    "check_bundle_file",
    "check_dataset",
    "check_dataset_ref",
    "check_output",
    "check_party",
    "check_user",
    "dataset_blob_prefix",
    "dataset_data_key",
    "dataset_join_key_blob",
    "dataset_view_key",
    "output_blob_key",
]

PARTY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DATASET_REF = re.compile(rf"{PARTY.pattern}/{PARTY.pattern}")
BUNDLE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
OUTPUT = BUNDLE_FILE
BACKEND = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
BLOB_KEY = re.compile(r"[a-z0-9_-]+(/[a-z0-9_.~-]+)*")
_ID = re.compile(r"[0-9a-f]{32}")
_VIEW_KIND = re.compile(r"[a-z]{1,32}")


class InvalidName(VeilError, ValueError):
    """A name or key outside its grammar. The message quotes the name (names are not data)."""

    status_hint = 422


def _check(pattern: re.Pattern[str], name: str, what: str, rule: str) -> str:
    if not isinstance(name, str) or pattern.fullmatch(name) is None:
        raise InvalidName(f"invalid {what} name {name!r}: {rule}")
    return name


_LOWER = "use a-z, 0-9, '-' or '_' (at most 64, starting with a letter or digit)"
_MIXED = "use A-Z, a-z, 0-9, '.', '-' or '_' (at most 128, starting with a letter or digit)"


def check_party(name: str, what: str = "party") -> str:
    return _check(PARTY, name, what, _LOWER)


def check_user(name: str) -> str:
    return _check(PARTY, name, "user", _LOWER)


def check_dataset(name: str) -> str:
    """A dataset's short name (its owner's party name comes in front: `owner/name`)."""
    return _check(PARTY, name, "dataset", _LOWER)


def check_dataset_ref(ref: str) -> str:
    return _check(DATASET_REF, ref, "dataset", "expected owner/name, each " + _LOWER)


def check_bundle_file(name: str) -> str:
    return _check(BUNDLE_FILE, name, "file", _MIXED)


def check_output(name: str) -> str:
    return _check(OUTPUT, name, "output", _MIXED)


def check_backend(name: str) -> str:
    return _check(BACKEND, name, "backend", "use a-z, 0-9 or '-'")


def check_blob_key(key: str) -> str:
    if BLOB_KEY.fullmatch(key) is None or ".." in key:
        raise InvalidName(f"invalid blob key {key!r}")
    return key


def _segment(name: str) -> str:
    """A mixed-case name as a lowercase key segment (see the module docstring)."""
    mask = sum(1 << i for i, c in enumerate(name) if "A" <= c <= "Z")
    return name.lower() + (f"~{mask:x}" if mask else "")


def _id(value: str, what: str) -> str:
    return _check(_ID, value, what, "expected 32 lowercase hex digits")


def dataset_blob_prefix(dataset_id: str) -> str:
    return f"datasets/{_id(dataset_id, 'dataset id')}"


def dataset_data_key(dataset_id: str) -> str:
    """The dataset's ciphertext (measured into every launch that reads it)."""
    return f"{dataset_blob_prefix(dataset_id)}/data.enc"


def dataset_view_key(dataset_id: str, kind: str) -> str:
    _check(_VIEW_KIND, kind, "view kind", "lowercase letters")
    return f"{dataset_blob_prefix(dataset_id)}/view-{kind}.enc"


def dataset_view_plot_key(dataset_id: str, kind: str) -> str:
    """The provider's fidelity plot (PNG) of a DP view."""
    _check(_VIEW_KIND, kind, "view kind", "lowercase letters")
    return f"{dataset_blob_prefix(dataset_id)}/view-{kind}-fidelity.png.enc"


def dataset_join_key_blob(dataset_id: str, position: int, what: str) -> str:
    """A join-key column's sealed key ``index`` (tags of the real keys) or view ``keys``, by
    the column's position in the policy's ``join_keys`` (fixed after upload)."""
    if what not in ("index", "keys") or not 0 <= position < 1000:
        raise ValueError("a join-key blob is the index or keys of a join key by position")
    return f"{dataset_blob_prefix(dataset_id)}/joinkey-{position}-{what}.enc"


def view_charge_name(kind: str) -> str:
    """The ledger's name for what a DP view spent. The colon keeps it apart from every job
    output name (``check_output`` allows none)."""
    _check(_VIEW_KIND, kind, "view kind", "lowercase letters")
    return f"view:{kind}"


VIEW_CHARGE_PREFIX = "view:"


def bundle_blob_key(job_id: str, file: str) -> str:
    return f"jobs/{_id(job_id, 'job id')}/bundle/{_segment(check_bundle_file(file))}"


def output_blob_key(job_id: str, name: str) -> str:
    return f"jobs/{_id(job_id, 'job id')}/outputs/{_segment(check_output(name))}"
