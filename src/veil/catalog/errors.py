"""Catalog error types. Messages name columns and fields, never data values."""

from __future__ import annotations

from veil.errors import VeilError

__all__ = [
    "CatalogError",
    "MalformedUpload",
    "PolicyError",
    "SchemaRejected",
    "UnsupportedFormat",
    "UploadTooLarge",
    "ViewConfigError",
    "ViewUnavailable",
]


class CatalogError(VeilError):
    """Base class for every catalog error."""

    status_hint = 422


class MalformedUpload(CatalogError):
    """The upload could not be parsed (bad CSV/Parquet, empty, type conflict between blocks)."""


class UploadTooLarge(CatalogError):
    """The upload exceeded the configured byte limit."""

    status_hint = 413


class UnsupportedFormat(CatalogError):
    """The file is not CSV or Parquet, or uses column types the catalog does not store."""


class SchemaRejected(CatalogError):
    """The data's schema does not satisfy the dataset policy's ``schema`` section."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("schema rejected by policy: " + "; ".join(self.problems))


class PolicyError(CatalogError):
    """A policy document failed to parse or validate; ``errors`` holds (field path, reason)."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        self.errors = list(errors or [])
        detail = "; ".join(f"{path}: {reason}" for path, reason in self.errors)
        super().__init__(f"{message}: {detail}" if detail else message)


class ViewUnavailable(CatalogError):
    """A requested stage-1 view has no registered builder or is not permitted by the policy."""


class ViewConfigError(CatalogError):
    """The policy's view settings cannot work for this data: every problem at once, and a
    TOML snippet the provider can paste into ``[views.synthetic]`` to fix them."""

    def __init__(self, problems: list[str], snippet: str = "") -> None:
        self.problems = list(problems)
        self.snippet = snippet
        text = "the stage-1 views cannot be built as configured:\n" + "\n".join(
            f"  - {p}" for p in self.problems)
        if snippet:
            text += "\nadd to the policy (replace the example values with public knowledge):\n" \
                + snippet
        super().__init__(text)
