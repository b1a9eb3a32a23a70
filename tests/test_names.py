"""The name grammars and the blob keys built from them (pure: no server, no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil import names
from veil.store.blobs import BlobError, BlobStore

JOB = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("check, name", [
    (names.check_party, "hospital\n"), (names.check_user, "alice\n"),
    (names.check_dataset, "visits\n"), (names.check_dataset_ref, "hospital/visits\n"),
    (names.check_bundle_file, "a.ipynb\n"), (names.check_output, "Total\n"),
    (names.check_backend, "local-sandbox\n"),
    (names.check_party, "Hospital"), (names.check_output, ".hidden"),
    (names.check_bundle_file, "../a.py"), (names.check_dataset_ref, "hospital"),
])
def test_names_outside_their_grammar_are_refused(check, name: str) -> None:
    with pytest.raises(names.InvalidName):
        check(name)


@pytest.mark.parametrize("name", ["Total", "total", "Untitled.ipynb", "Analysis.py",
                                  "ByRegion_2.v1-x", "A" * 128])
def test_every_output_and_file_name_has_a_valid_blob_key(tmp_path: Path, name: str) -> None:
    store = BlobStore(tmp_path)
    for key in (names.output_blob_key(JOB, name), names.bundle_blob_key(JOB, name)):
        assert names.check_blob_key(key) == key
        store.put(key, name.encode())
        assert store.get(key) == name.encode()


def test_mixed_case_names_never_share_a_key() -> None:
    keys = {names.output_blob_key(JOB, n) for n in ("Total", "total", "TOTAL", "toTal")}
    assert len(keys) == 4
    assert names.output_blob_key(JOB, "total") == f"jobs/{JOB}/outputs/total"  # unchanged


def test_builders_refuse_what_the_grammars_refuse() -> None:
    with pytest.raises(names.InvalidName):
        names.output_blob_key(JOB, "a/b")
    with pytest.raises(names.InvalidName):
        names.bundle_blob_key("../etc", "a.py")
    with pytest.raises(BlobError):
        BlobStore.path(BlobStore.__new__(BlobStore), "jobs/x/../y")
    assert names.dataset_data_key(JOB) == f"datasets/{JOB}/data.enc"  # the launcher's path
