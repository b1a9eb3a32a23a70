"""The root of Veil's exceptions, and the HTTP status each kind of failure maps to.

Every error a request can cause derives from `VeilError` and carries a `status_hint`; the
server's single handler (`veil.server.app`) walks the exception's MRO for the first class
with a status, as Starlette looks up its exception handlers. The messages of these types
are written to be shown to the caller: they name fields, columns and states, never secrets
or data values. Anything else is a bug and answers a bare 500.

The tree (module of each class in brackets; `*` marks classes that also keep a builtin
base, so existing ``except ValueError`` and the like still catch them):

    VeilError  500
    ├── NotFound*  404                      [identity]   absent, or not visible to you
    ├── Forbidden*  403                     [identity]
    ├── Conflict*  409                      [identity]
    ├── IdentityError*  422                 [identity]
    ├── InvalidName*  422                   [names]      a name outside its grammar
    │   └── BlobError  422                  [store.blobs] a blob key outside its grammar
    ├── CatalogError  422                   [catalog.errors]
    │   ├── MalformedUpload, UnsupportedFormat, SchemaRejected, PolicyError, ViewUnavailable,
    │   │   ViewConfigError
    │   └── UploadTooLarge  413
    ├── BundleError*  422                   [jobs.bundle]
    ├── JobError*  422                      [jobs.service]
    ├── IllegalTransition  409              [jobs.lifecycle]
    ├── StaleState  409                     [jobs.lifecycle] lost a race for a row
    ├── PrivacyError  422                   [privacy.errors] and its subclasses
    └── AuditChainBroken  409               [audit]      the log does not match its hashes

Exceptions of parts that are not (yet) in the tree get their status from the server's
table of foreign types: `SandboxError` 503 (the isolation tool is missing or broken) and
`ManifestError` 422 (a workload's output manifest is malformed).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["VeilError", "status_for"]


class VeilError(Exception):
    """Base of every Veil error; `status_hint` is the HTTP status a request gets for it."""

    status_hint: int = 500


def status_for(exc: BaseException, foreign: Mapping[type[Exception], int] | None = None) -> int:
    """The status of the most specific class in `exc`'s MRO that declares one."""
    for cls in type(exc).__mro__:
        if foreign and cls in foreign:
            return foreign[cls]
        hint = cls.__dict__.get("status_hint")
        if isinstance(hint, int):
            return hint
    return 500
