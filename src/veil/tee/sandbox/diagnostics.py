"""What a researcher is told about a failed run: useful, and never a channel for data.

The rule, in one place. The workload is hostile and everything the runner reports came out
of it (a notebook can raise any class with any message, name a class ``ModuleNotFoundError``,
or make ``__str__`` read the data). So the host never echoes a message; it re-words a
message from *public* pieces only:

* the exception type: a builtin or a well-known library class (``runner.safe_type_name``),
  else ``OtherException``;
* the cell (a notebook's cell count is in the approved code) and the line, kept only when it
  lies inside that cell's (or script's) source;
* a message only for classes whose message names one thing — a module (``ModuleNotFoundError``,
  ``ImportError``), a name (``NameError``), an attribute (``AttributeError``), a key
  (``KeyError``) — and only when that thing is *public*: written in the approved code, or a
  column of an input's schema. Which of those public words is named is a choice among words
  everyone already knows, like the type name itself; a value from the data never matches;
* ``SyntaxError``/``IndentationError``: the host compiles the cell itself and reports the
  compiler's own message for the approved source; a hand-raised one (the cell compiles) gets
  no message.
Everything else (``ValueError``, ``AssertionError``, custom classes, …) gets its type only.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from veil.tee.sandbox.runner import safe_type_name

__all__ = ["Diagnostic", "cell_source", "diagnose", "public_vocabulary"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_DETAIL = 100
# Types an AttributeError may name without them being in the code: library types whose names
# say nothing about the data.
_KNOWN_TYPES = frozenset({
    "DataFrame", "Series", "Index", "RangeIndex", "MultiIndex", "ndarray", "NoneType", "module",
    "DataFrameGroupBy", "SeriesGroupBy", "Timestamp", "Query", "Relation", "DPResult", "DPModel",
    "AggregateResult", "Figure", "Axes", "function", "method", "builtin_function_or_method",
})
_SYNTAX = frozenset({"SyntaxError", "IndentationError", "TabError"})


@dataclass(frozen=True)
class Diagnostic:
    """A failure, reduced to public facts; ``text`` is safe to show and to log."""

    error_type: str
    cell: int | None = None
    line: int | None = None
    message: str | None = None

    def text(self, what: str) -> str:
        where = [f"cell {self.cell}"] if self.cell is not None else []
        if self.line is not None:
            where.append(f"line {self.line}")
        out = f"{what} raised {self.error_type}"
        if where:
            out += " in " + ", ".join(where)
        return out + (f": {self.message}" if self.message else "")


def cell_source(entry_name: str, data: bytes, cell: int | None) -> str | None:
    """The source the failure happened in: the script, or the notebook's cell (1-based)."""
    if not entry_name.endswith(".ipynb"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        cells = json.loads(data)["cells"]
        if cell is None or not 0 < cell <= len(cells):
            return None
        source = cells[cell - 1].get("source", "")
        return "".join(source) if isinstance(source, list) else str(source)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def public_vocabulary(entry_name: str, data: bytes, columns: Collection[str]) -> frozenset[str]:
    """Words anyone with the approved code and the schemas knows: code tokens and columns."""
    text = ""
    if entry_name.endswith(".ipynb"):
        try:
            cells = json.loads(data)["cells"]
            text = "\n".join("".join(c["source"]) if isinstance(c["source"], list)
                             else str(c["source"]) for c in cells if c.get("cell_type") == "code")
        except (ValueError, KeyError, TypeError, AttributeError):
            text = ""
    else:
        text = data.decode("utf-8", errors="replace")
    words = set(_WORD.findall(text))
    for word in list(words):  # `import a.b.c` makes a, a.b and a.b.c public
        parts = word.split(".")
        words.update(".".join(parts[:i]) for i in range(1, len(parts)))
        words.update(parts)
    return frozenset(words) | frozenset(str(c) for c in columns)


def diagnose(error_type: str | None, *, cell: int | None, line: int | None,
             detail: Sequence[str] = (), source: str | None, vocabulary: Collection[str],
             notebook: bool) -> Diagnostic:
    """Apply the module's rule to what the runner reported (all of it untrusted)."""
    etype = safe_type_name(error_type) if error_type and error_type.isidentifier() \
        else "OtherException"
    lines = source.splitlines() if source is not None else None
    if lines is None or line is None or not 0 < line <= max(len(lines), 1):
        line = None
    if etype in _SYNTAX:
        return _syntax(etype, cell, source, notebook)
    words = [d for d in detail if isinstance(d, str) and 0 < len(d) <= _MAX_DETAIL]
    message = _message(etype, words, vocabulary) if len(words) == len(detail) else None
    return Diagnostic(etype, cell, line, message)


def _message(etype: str, words: list[str], vocabulary: Collection[str]) -> str | None:
    def public(word: str) -> bool:
        return word in vocabulary

    if etype == "ModuleNotFoundError" and len(words) == 1 and public(words[0]):
        return (f"no module named {words[0]!r} in the secure stage's runtime "
                "(`veil runtime` lists its packages)")
    if etype == "ImportError" and len(words) == 2 and all(map(public, words)):
        return f"cannot import name {words[0]!r} from {words[1]!r}"
    if etype in ("NameError", "UnboundLocalError") and len(words) == 1 and public(words[0]):
        return f"name {words[0]!r} is not defined"
    if etype == "AttributeError" and len(words) == 2 and public(words[0]) and (
            words[1] in _KNOWN_TYPES or public(words[1])):
        return f"{words[1]!r} object has no attribute {words[0]!r}"
    if etype == "KeyError" and len(words) == 1 and public(words[0]):
        return f"key {words[0]!r} not found (check the column names of the input's schema)"
    return None


def _syntax(etype: str, cell: int | None, source: str | None, notebook: bool) -> Diagnostic:
    """Compile the approved source on the host: its own error, or nothing if it compiles."""
    if source is None:
        return Diagnostic(etype, cell)
    code = _ipython_to_python(source) if notebook else source
    try:
        ast.parse(code)
    except SyntaxError as exc:  # the compiler's words about public code
        line = exc.lineno if exc.lineno and 0 < exc.lineno <= len(code.splitlines()) else None
        return Diagnostic(type(exc).__name__, cell, line, str(exc.msg)[:_MAX_DETAIL] or None)
    return Diagnostic(etype, cell)  # raised by hand: its message is the workload's


def _ipython_to_python(source: str) -> str:
    """A notebook cell as the kernel compiles it (magics and ``!`` lines made Python)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return source
    try:
        return str(TransformerManager().transform_cell(source))
    except Exception:  # a transformer failure: compile the raw text instead
        return source
