"""The SQLite store: schema, synchronous operations, and the actor that serializes writes."""

from .actor import StoreActor, StoreClient
from .db import Database, open_database

__all__ = ["Database", "StoreActor", "StoreClient", "open_database"]
