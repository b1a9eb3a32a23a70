"""veil.catalog: datasets' data plane: streamed ingest, schemas, stage-1 views, policies.

Typical upload (the server route / worker hold the keys and paths)::

    policy = parse_policy(text, format="toml")
    result = ingest(upload, filename="claims.csv", max_bytes=limit, dest=path, dek=dek,
                    context=dataset_id.encode(), views=view_builders_for(policy), policy=policy)
    frame = load_frame(path, dek, context=dataset_id.encode())
"""

from veil.catalog.errors import (
    CatalogError,
    MalformedUpload,
    PolicyError,
    SchemaRejected,
    UnsupportedFormat,
    UploadTooLarge,
    ViewUnavailable,
)
from veil.catalog.ingest import IngestResult, ingest, load_frame, read_dataset
from veil.catalog.policy import (
    ApprovalSpec,
    ColumnSpec,
    DatasetPolicy,
    MockViewSpec,
    SampleViewSpec,
    SchemaSpec,
    SyntheticViewSpec,
    ViewsSpec,
    parse_policy,
)
from veil.catalog.schema import (
    COLUMN_TYPES,
    Column,
    ColumnStats,
    ColumnType,
    Schema,
    infer_schema,
    validate,
)
from veil.catalog.views import (
    VIEW_BUILDERS,
    MockViewBuilder,
    SampleViewBuilder,
    ViewBuilder,
    make_view_builder,
    register_view_builder,
    view_builders_for,
)

__all__ = [
    "COLUMN_TYPES",
    "VIEW_BUILDERS",
    "ApprovalSpec",
    "CatalogError",
    "Column",
    "ColumnSpec",
    "ColumnStats",
    "ColumnType",
    "DatasetPolicy",
    "IngestResult",
    "MalformedUpload",
    "MockViewBuilder",
    "MockViewSpec",
    "PolicyError",
    "SampleViewBuilder",
    "SampleViewSpec",
    "Schema",
    "SchemaRejected",
    "SchemaSpec",
    "SyntheticViewSpec",
    "UnsupportedFormat",
    "UploadTooLarge",
    "ViewBuilder",
    "ViewUnavailable",
    "ViewsSpec",
    "infer_schema",
    "ingest",
    "load_frame",
    "make_view_builder",
    "parse_policy",
    "read_dataset",
    "register_view_builder",
    "validate",
    "view_builders_for",
]
