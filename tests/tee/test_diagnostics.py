"""The diagnostics rule: useful messages for public facts, nothing for data-carrying errors."""

from __future__ import annotations

import json

import pytest

from veil.tee.sandbox.diagnostics import cell_source, diagnose, public_vocabulary
from veil.tee.sandbox.runner import detail_from_message

CODE = ("import pandas as pd\nimport sklearnx\nimport veil\n"
        "v = veil.load('hospital/visits')\nv['regoin']\nv.groupy('region')\nprint(totl)\n")
COLUMNS = ["patient_id", "region", "cost"]


def _diag(etype: str, detail: list[str], line: int | None = 2, source: str = CODE):
    vocab = public_vocabulary("a.py", source.encode(), COLUMNS)
    return diagnose(etype, cell=None, line=line, detail=detail, source=source,
                    vocabulary=vocab, notebook=False)


@pytest.mark.parametrize(("etype", "detail", "words"), [
    ("ModuleNotFoundError", ["sklearnx"], "no module named 'sklearnx'"),
    ("NameError", ["totl"], "name 'totl' is not defined"),
    ("AttributeError", ["groupy", "DataFrame"], "'DataFrame' object has no attribute 'groupy'"),
    ("KeyError", ["regoin"], "key 'regoin' not found"),
    ("KeyError", ["cost"], "key 'cost' not found"),  # a schema column, not in the code
])
def test_public_names_are_reported(etype: str, detail: list[str], words: str) -> None:
    diag = _diag(etype, detail)
    assert diag.message is not None and words in diag.message
    assert diag.text("script").startswith(f"script raised {etype} in line 2: ")


@pytest.mark.parametrize(("etype", "detail"), [
    ("ValueError", ["patient 123 has diabetes"]),      # class that carries data: type only
    ("AssertionError", ["17,north,455"]),               # a row in an assertion
    ("KeyError", ["patient 123"]),                      # a raw value as a key
    ("KeyError", ["4711"]),
    ("ModuleNotFoundError", ["alice_smith_hiv"]),        # data dressed as a module name
    ("NameError", ["secret_9981"]),
    ("AttributeError", ["groupy", "Patient123"]),        # a forged owner type
    ("AttributeError", ["s3cr3t", "DataFrame"]),
    ("OtherException", ["region"]),                      # custom class: never a message
    ("KeyError", ["region", "extra"]),                   # malformed: two words for a key
    ("KeyError", ["x" * 101]),
])
def test_data_carrying_errors_say_only_their_type(etype: str, detail: list[str]) -> None:
    diag = _diag(etype, detail)
    assert diag.message is None
    assert diag.text("script") == f"script raised {etype} in line 2"
    for word in detail:
        assert word not in diag.text("script") or word in CODE


def test_custom_class_with_a_forged_name_is_other_exception() -> None:
    for forged in ("PatientSmithHasHIV", "ValueError_17", "not an identifier"):
        diag = _diag(forged, ["region"])
        assert (diag.error_type, diag.message) == ("OtherException", None)


def test_line_outside_the_source_is_dropped() -> None:
    assert _diag("ValueError", [], line=9999).line is None
    assert _diag("ValueError", [], line=0).line is None
    assert _diag("ValueError", [], line=7).line == 7


def test_syntax_error_message_comes_from_the_host_compiler() -> None:
    bad = "x = (1,\ny = 2\n"
    diag = diagnose("SyntaxError", cell=3, line=1, detail=[], source=bad, vocabulary=set(),
                    notebook=True)
    assert diag.error_type == "SyntaxError" and diag.message and diag.line is not None
    assert diag.text("notebook").startswith("notebook raised SyntaxError in cell 3, line ")


def test_hand_raised_syntax_error_gets_no_message() -> None:
    src = "raise SyntaxError('patient 123 is HIV positive')\n"
    diag = diagnose("SyntaxError", cell=1, line=1, detail=["patient 123 is HIV positive"],
                    source=src, vocabulary=public_vocabulary("a.py", src.encode(), []),
                    notebook=True)
    assert diag.message is None and "patient" not in diag.text("notebook")


def test_notebook_magics_compile_as_the_kernel_does() -> None:
    diag = diagnose("SyntaxError", cell=1, line=1, detail=[], source="%matplotlib inline\nx=1\n",
                    vocabulary=set(), notebook=True)
    assert diag.message is None  # the cell compiles: nothing of the workload's is shown


def test_runner_parses_only_the_known_message_shapes() -> None:
    assert detail_from_message("ModuleNotFoundError", "No module named 'torch'") == ["torch"]
    assert detail_from_message("AttributeError",
                               "'DataFrame' object has no attribute 'x'") == ["x", "DataFrame"]
    assert detail_from_message("AttributeError",
                               "module 'numpy' has no attribute 'y'") == ["y", "module"]
    assert detail_from_message("KeyError", "'region'") == ["region"]
    assert detail_from_message("KeyError", "4711") == []
    assert detail_from_message("ValueError", "patient 123") == []


def test_cell_source_and_vocabulary_of_a_notebook() -> None:
    nb = json.dumps({"cells": [{"cell_type": "markdown", "source": "# patient_secret"},
                               {"cell_type": "code", "source": ["import a.b\n", "x = 1\n"]}]})
    assert cell_source("n.ipynb", nb.encode(), 2) == "import a.b\nx = 1\n"
    assert cell_source("n.ipynb", nb.encode(), 9) is None
    vocab = public_vocabulary("n.ipynb", nb.encode(), ["col"])
    assert {"a", "a.b", "b", "x", "col"} <= vocab and "patient_secret" not in vocab
