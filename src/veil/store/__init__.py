"""Persistence: SQLAlchemy models, transactions, migrations and blobs."""

from veil.store.blobs import BlobError, BlobStore
from veil.store.db import Base, Database, open_database

__all__ = ["Base", "BlobError", "BlobStore", "Database", "open_database"]
