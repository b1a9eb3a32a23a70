"""The secure stage's package list and its digest (measured into every launch)."""

from __future__ import annotations

from veil.tee.runtime import Package, describe, packages, packages_digest


def test_the_list_is_this_interpreters_distributions() -> None:
    found = packages()
    names = [p.name for p in found]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert {"pandas", "opendp", "nbclient"} <= set(names)
    assert describe()["packages_digest"] == packages_digest(found)


def test_the_digest_changes_with_any_version() -> None:
    base = (Package("numpy", "2.0.0"), Package("pandas", "3.0.0"))
    assert packages_digest(base) == packages_digest(tuple(base))
    assert packages_digest(base) != packages_digest((Package("numpy", "2.0.1"), base[1]))
    assert packages_digest(base) != packages_digest(base[:1])
