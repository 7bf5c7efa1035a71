"""Drift detectors (veml.coreset.twosample): calibration, power, purity of test(), bad input."""

from __future__ import annotations

import numpy as np
import pytest

from veml.coreset.twosample import MIN_SAMPLES, CoreSetMMD, Univariate
from veml.errors import InvalidInput


def gauss(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    x[:, 0] += shift
    return x


def test_core_set_mmd_is_calibrated_without_drift():
    fitted = CoreSetMMD(k=50, n_permutations=50).fit(gauss(2000, 8, 0))
    false = sum(fitted.test(gauss(100, 8, 100 + i)).drift for i in range(100))
    assert false <= 10  # alpha = 0.05 over 100 trials: 10 would be far outside chance


def test_core_set_mmd_detects_a_shift_and_grows_with_it():
    fitted = CoreSetMMD(k=50, n_permutations=50).fit(gauss(2000, 8, 0))
    small, large = fitted.test(gauss(200, 8, 1, shift=0.5)), fitted.test(gauss(200, 8, 2, shift=2.0))
    assert large.drift and small.drift
    assert large.statistic > small.statistic > 0 and large.statistic > large.threshold
    assert large.p_value <= 1 / 51 + 1e-9  # no permutation beats it


def test_testing_never_changes_the_fitted_detector():
    fitted = CoreSetMMD(k=30, n_permutations=30).fit(gauss(500, 4, 0))
    before = (fitted.centres.copy(), fitted.ref_features.copy(), fitted.whiten.copy())
    batch = gauss(80, 4, 5, shift=0.3)
    first, again = fitted.test(batch), fitted.test(batch)
    assert first == again
    assert all(np.array_equal(a, b) for a, b in zip(before, (fitted.centres, fitted.ref_features, fitted.whiten)))
    with pytest.raises(Exception):
        fitted.bandwidth = 2.0  # frozen


@pytest.mark.parametrize("test_name", ["ks", "cvm"])
def test_univariate_tests_are_bonferroni_corrected(test_name):
    fitted = Univariate(test_name=test_name).fit(gauss(400, 20, 0))
    quiet = fitted.test(gauss(200, 20, 1))
    loud = fitted.test(gauss(200, 20, 2, shift=1.0))
    assert not quiet.drift and loud.drift
    assert loud.threshold == pytest.approx(0.05 / 20) and loud.details["worst_feature"] == 0
    assert loud.details["features_drifted"] >= 1


def test_bad_input_is_refused():
    fitted = CoreSetMMD(k=20).fit(gauss(200, 4, 0))
    with pytest.raises(InvalidInput, match="differ in shape"):
        fitted.test(gauss(50, 5, 1))
    with pytest.raises(InvalidInput, match=f"at least {MIN_SAMPLES['mmd']}"):
        fitted.test(gauss(3, 4, 1))
    with pytest.raises(InvalidInput, match="NaN"):
        fitted.test(np.full((20, 4), np.nan, np.float32))
    with pytest.raises(InvalidInput, match="at least"):
        CoreSetMMD().fit(gauss(5, 4, 0))
    with pytest.raises(InvalidInput, match="same features"):
        Univariate().fit(np.ones((50, 3), np.float32))
    with pytest.raises(InvalidInput, match="unknown univariate test"):
        Univariate(test_name="t").fit(gauss(50, 2, 0))
