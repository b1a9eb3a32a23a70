"""A dataset's life: ``draft`` (policy set) → ``building`` (data stored, views being built in
the background) → ``ready`` or ``failed`` (with a reason); a provider may delete it
(``deleted``: key, data and views gone, the row kept for jobs and the audit). Only ``ready``
datasets are visible to consumers and usable by jobs; the strings are what the API and the
database carry."""

from __future__ import annotations

from typing import Final

DRAFT: Final = "draft"
BUILDING: Final = "building"
READY: Final = "ready"
FAILED: Final = "failed"
DELETED: Final = "deleted"

# Phases of a build, in order, as reported in ``Dataset.build["phase"]``.
QUEUED: Final = "queued"
READING: Final = "reading"  # streaming the stored data through the view builders
JOIN_KEYS: Final = "join keys"  # DP counts of the join keys and their overlaps, view keys
STORING: Final = "storing"  # sealing the views and publishing them
