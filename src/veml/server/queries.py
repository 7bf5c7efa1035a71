"""Request-side helpers the routes share: kind names as the API spells them, and sample paging."""

from __future__ import annotations

from typing import Sequence

from veml.entities import SHORT_KIND, Node
from veml.repository import Repository

LONG_KIND = {short: long for long, short in SHORT_KIND.items()}
REPORT_KINDS = {"drift": "DriftReport", "similarity": "SimilarityReport"}


def kinds_of(short: Sequence[str] | None) -> list[str] | None:
    if not short:
        return None
    return [LONG_KIND[s] for s in short]


def sample_ids(repo: Repository, node: Node, limit: int, offset: int) -> tuple[list[int], int]:
    ids = repo.data.ids(node)
    n = len(ids)
    if offset >= n:
        return [], n
    # roaring bitmaps index by rank, so a page never materialises the whole id set
    return [int(i) for i in ids[offset:min(n, offset + limit)]], n
