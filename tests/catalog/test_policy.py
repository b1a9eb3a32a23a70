"""Dataset policy documents: both formats, strictness, field paths in errors."""

from __future__ import annotations

import json

import pytest

from veil.catalog import DatasetPolicy, PolicyError, parse_policy

DIGEST = "sha256:" + "ab" * 32

FULL_TOML = f"""
consumers = ["acme-research", "beta"]
min_group_size = 20
allowed_backends = ["local-sandbox"]

[approval]
mode = "auto"
auto_digests = ["{DIGEST}"]

[views.mock]
rows = 500

[views.sample]
publishable = true
fraction = 0.01

[views.synthetic]
epsilon = 1.0
delta = 1e-6
rows = 2000

[schema]
forbidden = ["ssn"]
allow_extra = false
[[schema.columns]]
name = "age"
type = "int"
nullable = false
[[schema.columns]]
name = "city"
type = "category"

[budget]
epsilon = 3.0
delta = 1e-5
rule = "zcdp"
renewal = "30d"
"""


def test_full_toml_policy_parses() -> None:
    p = parse_policy(FULL_TOML, format="toml")
    assert p.consumers == ["acme-research", "beta"]
    assert p.approval.mode == "auto" and p.approval.auto_digests == [DIGEST]
    assert p.min_group_size == 20
    assert p.views.mock.rows == 500
    assert p.views.sample is not None and p.views.sample.fraction == 0.01
    assert p.views.synthetic is not None and p.views.synthetic.epsilon == 1.0
    assert p.schema_spec is not None and p.schema_spec.forbidden == ["ssn"]
    assert [c.name for c in p.schema_spec.columns] == ["age", "city"]
    assert p.budget is not None and p.budget.rule == "zcdp"


def test_json_equivalent_and_round_trips() -> None:
    p = parse_policy(FULL_TOML, format="toml")
    again = parse_policy(p.to_json(), format="json")
    assert again == p
    # The store may persist model_dump(mode="json") and validate it back.
    assert DatasetPolicy.model_validate(p.model_dump(mode="json")) == p
    assert DatasetPolicy.model_validate(p.model_dump(mode="json", by_alias=True)) == p


def test_defaults_fail_closed() -> None:
    p = parse_policy("", format="toml")
    assert p.consumers == []
    assert p.approval.mode == "manual"
    assert p.min_group_size == 10
    assert p.allowed_backends == ["local-sandbox"]
    assert p.views.sample is None and p.views.synthetic is None
    assert p.schema_spec is None and p.budget is None


def _errors(text: str, fmt: str = "toml") -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, format=fmt)  # type: ignore[arg-type]
    return info.value.errors


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('consumer = ["x"]', "consumer"),
        ("[approval]\nmode = 'manual'\nauto = true", "approval.auto"),
        ("[views.mock]\nrows = 5\ncopies = 1", "views.mock.copies"),
        ("[views.sample]\npublishable = true\nevery = 2", "views.sample.every"),
        ("[views.extra]\nrows = 1", "views.extra"),
        ("[schema]\nrequired = ['a']", "schema.required"),
        ("[[schema.columns]]\nname = 'a'\nunit = 'kg'", "schema.columns.0.unit"),
        ("[budget]\nepsilon = 1.0\nsplit = 2", "budget.split"),
    ],
)
def test_unknown_fields_are_errors_at_every_level(text: str, path: str) -> None:
    errors = _errors(text)
    assert path in [p for p, _ in errors]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('min_group_size = "10"', "min_group_size"),
        ("min_group_size = 0", "min_group_size"),
        ("min_group_size = 2.5", "min_group_size"),
        ('consumers = "acme"', "consumers"),
        ('consumers = ["a", "a"]', "consumers"),
        ('consumers = ["bad name!"]', "consumers.0"),
        ("allowed_backends = []", "allowed_backends"),
        ('allowed_backends = ["Local Sandbox"]', "allowed_backends"),
        ("[approval]\nmode = 'sometimes'", "approval.mode"),
        ("[approval]\nmode = 'auto'", "approval"),
        ("[approval]\nmode = 'auto'\nauto_digests = ['md5:00']", "approval.auto_digests"),
        ("[views.mock]\nrows = 0", "views.mock.rows"),
        ("[views.sample]\npublishable = 'yes'", "views.sample.publishable"),
        ("[views.sample]\nfraction = 1.5", "views.sample.fraction"),
        ("[views.sample]\nfraction = 0.1\nrows = 10", "views.sample"),
        ("[views.synthetic]\nepsilon = 0", "views.synthetic.epsilon"),
        ("[views.synthetic]\nepsilon = 1\ndelta = 1", "views.synthetic.delta"),
        ("[[schema.columns]]\nname = 'a'\ntype = 'decimal'", "schema.columns.0.type"),
        ("[schema]\nforbidden = ['a']\n[[schema.columns]]\nname = 'a'", "schema"),
        ("[budget]\nepsilon = -1", "budget.epsilon"),
        ("[budget]\nepsilon = 1\nrule = 'advanced'", "budget.rule"),
    ],
)
def test_wrong_types_and_values(text: str, path: str) -> None:
    assert path in [p for p, _ in _errors(text)]


def test_json_unknown_nested_field_and_wrong_type() -> None:
    doc = {"views": {"mock": {"rows": 10, "seed": 3}}, "min_group_size": "5"}
    paths = [p for p, _ in _errors(json.dumps(doc), "json")]
    assert "views.mock.seed" in paths and "min_group_size" in paths


def test_syntax_errors_and_bad_top_level() -> None:
    with pytest.raises(PolicyError, match="not valid TOML"):
        parse_policy("consumers = [", format="toml")
    with pytest.raises(PolicyError, match="not valid JSON"):
        parse_policy("{", format="json")
    with pytest.raises(PolicyError, match="top level"):
        parse_policy("[1, 2]", format="json")
    with pytest.raises(PolicyError, match="unknown policy format"):
        parse_policy("", format="yaml")  # type: ignore[arg-type]


def test_error_message_lists_paths_not_values() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy('min_group_size = "secret-value-123"', format="toml")
    assert "min_group_size" in str(info.value)
    assert "secret-value-123" not in str(info.value)
