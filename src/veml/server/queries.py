"""Request-side helpers the routes share: kind names as the API spells them."""

from __future__ import annotations

from typing import Sequence

from veml.entities import SHORT_KIND

LONG_KIND = {short: long for long, short in SHORT_KIND.items()}
REPORT_KINDS = {"drift": "DriftReport", "similarity": "SimilarityReport"}


def kinds_of(short: Sequence[str] | None) -> list[str] | None:
    if not short:
        return None
    return [LONG_KIND[s] for s in short]
