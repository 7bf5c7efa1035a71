"""Typical-cluster selection (TypiClust) for tiny labelling budgets: modes covered, outliers avoided."""

from __future__ import annotations

import numpy as np
import pytest

from veml.coreset.typical import typical_clusters, typicality
from veml.errors import InvalidInput


def _blobs(rng, sizes, centres, spread=0.3):
    x = np.concatenate([c + spread * rng.standard_normal((n, 2)) for n, c in zip(sizes, centres)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def test_one_typical_sample_from_each_mode_not_the_outliers():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, [120, 60, 30], [(0, 0), (6, 0), (0, 6)])
    outliers = np.array([[3.0, 3.0], [-4.0, -4.0], [9.0, 7.0]])  # far from every mode: what uncertainty sampling finds
    x = np.concatenate([x, outliers])
    pick = typical_clusters(x, 3, seed=1)
    assert len(set(pick.tolist())) == 3
    assert set(y[pick[pick < len(y)]].tolist()) == {0, 1, 2} and (pick < len(y)).all()
    centres = np.array([(0, 0), (6, 0), (0, 6)])
    assert np.linalg.norm(x[pick] - centres[y[pick]], axis=1).max() < 0.3  # near the mode's centre, not its rim
    assert y[pick[0]] == 0  # the largest cluster gives first


def test_typicality_is_highest_in_the_densest_place():
    x = np.array([[0.0], [0.1], [0.2], [0.3], [5.0]])
    t = typicality(x, k=2)
    assert np.argmax(t) in (1, 2) and np.argmin(t) == 4


def test_a_budget_larger_than_the_modes_still_returns_distinct_rows_deterministically():
    rng = np.random.default_rng(2)
    x, _ = _blobs(rng, [40, 40], [(0, 0), (5, 5)])
    a, b = typical_clusters(x, 7, seed=3), typical_clusters(x, 7, seed=3)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 7
    assert np.array_equal(np.sort(typical_clusters(x[:4], 4)), np.arange(4))


@pytest.mark.parametrize("x,budget", [(np.zeros((5, 2)), 0), (np.zeros((5, 2)), 6), (np.zeros(5), 1), (np.zeros((0, 2)), 1)])
def test_bad_requests_are_refused(x, budget):
    with pytest.raises(InvalidInput):
        typical_clusters(x, budget)
