"""Reads the server needs that the Python API does not offer as one call yet.

Kept in this one module so the rest of ``veml.server`` only calls ``Repository`` methods; each
function here goes through the repository's stores handle (never an import of ``veml.store``)
and is a candidate to move into ``Repository`` / ``DataVersions`` as a public method.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pyroaring import BitMap

from veml.entities import SHORT_KIND, Node
from veml.errors import InvalidInput, NotFound
from veml.repository import Repository
from veml.versions.checkout import DataView

LONG_KIND = {short: long for long, short in SHORT_KIND.items()}
REPORT_KINDS = {"drift": "DriftReport", "similarity": "SimilarityReport"}


def kinds_of(short: Sequence[str] | None) -> list[str] | None:
    if not short:
        return None
    return [LONG_KIND[s] for s in short]


def list_versions(repo: Repository, kinds: list[str] | None, limit: int, offset: int) -> tuple[list[Node], int]:
    """One page of versions (oldest first) and how many there are in all."""
    graph = repo.stores.graph
    return graph.list(kinds=kinds, limit=limit, offset=offset), graph.count(kinds)


def sample_view(repo: Repository, node: Node, data_ids: Sequence[int] | np.ndarray) -> DataView:
    """A view of only these samples of ``node`` (with the version's annotations): reads their rows, not all."""
    return DataView(node, repo.stores, BitMap(np.asarray(data_ids, dtype=np.int64).tolist()), repo.data.annotation_ids(node))


def sample_ids(repo: Repository, node: Node, limit: int, offset: int) -> tuple[list[int], int]:
    ids = repo.data.ids(node)
    n = len(ids)
    if offset >= n:
        return [], n
    # roaring bitmaps index by rank, so a page never materialises the whole id set
    return [int(i) for i in ids[offset:min(n, offset + limit)]], n


def sample_payload(repo: Repository, node: Node, data_id: int) -> tuple[bytes, str, str | None]:
    """The encoded image of one sample of an image version, exactly as stored: (bytes, format, content hash)."""
    if node.props.get("modality") != "image":
        raise InvalidInput(f"version {node.name!r} holds {node.props.get('modality')} data, not images")
    if data_id not in repo.data.ids(node):
        raise NotFound(f"sample {data_id} is not in version {node.name!r}")
    table = sample_view(repo, node, [data_id]).samples_table()
    if table.num_rows != 1:
        raise NotFound(f"sample {data_id} of version {node.name!r} has no stored row")
    return table["payload"][0].as_py(), str(table["format"][0].as_py() or ""), table["content_hash"][0].as_py()
