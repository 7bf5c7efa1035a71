"""Listing data versions from the metadata database alone.

Apart from :mod:`veml.versions.data` so that listing (``veml data list``) imports neither Arrow nor
the sample store (nor, on SQLite, SQLAlchemy): the CLI's start-up budget is 0.3 s.
"""

from __future__ import annotations

from veml.entities import Node
from veml.store.graph import GraphReader

KIND = "DataVersion"


def list_data_versions(graph: GraphReader, role: str | None = None, limit: int | None = None, offset: int = 0) -> list[Node]:
    """The data versions, oldest first, optionally only those of ``role`` (train, test, unlabeled)."""
    nodes = graph.list(kinds=[KIND], limit=limit, offset=offset)
    return [n for n in nodes if role is None or n.props.get("role") == role]
