"""A forecaster's error estimated without labels: direct loss estimation (issue 15, part 3).

The features and errors are checked by hand on small arrays; the estimator is checked to follow the error it learned
and to refuse what it cannot fit; ``veml drift --inference`` on a real DCRNN deployment is checked to report the
same estimate as the one fitted by hand through the public API.  How close the estimate comes is a measurement
(BENCHMARKS.md), not asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest

import veml
from conftest import ok
from veml.datasets import generate_traffic, write_npz
from veml.errors import InvalidInput
from veml.lifecycle.estimate_forecast import FEATURES, FittedLoss, loss_features, window_errors
from veml.lifecycle.monitor import decide

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def test_features_read_the_input_and_the_forecast_by_hand():
    inputs = np.array([[[50.0], [52.0], [54.0], [56.0]],   # rising, no gaps
                       [[40.0], [0.0], [0.0], [0.0]]])     # the sensor went silent after one reading (0 = missing)
    forecasts = np.array([[[60.0], [62.0]], [[40.0], [40.0]]])
    x = dict(zip(FEATURES, loss_features(inputs, forecasts, 0.0).T))
    assert x["gap_mean"].tolist() == [5.0, 0.0] and x["gap_first"].tolist() == [4.0, 0.0]
    assert x["forecast_range"].tolist() == [2.0, 0.0] and x["forecast_level"].tolist() == [61.0, 40.0]
    assert x["volatility"].tolist() == [2.0, 0.0] and x["trend"].tolist() == [6.0, 0.0]
    assert x["last"].tolist() == [56.0, 40.0]  # the last reading, carried over the gap
    assert x["missing_share"].tolist() == [0.0, 0.75]


def test_errors_skip_the_steps_whose_future_is_missing():
    forecasts = np.array([[[10.0, 20.0], [10.0, 20.0]]])
    targets = np.array([[[12.0, 0.0], [16.0, 0.0]]])  # the second sensor reported nothing
    err, count = window_errors(forecasts, targets, 0.0)
    assert err.tolist() == [4.0, 0.0] and count.tolist() == [2, 0]


def _windows(rng, n, noise):
    """Flat series at 60 with sensor noise ``noise``; the forecast is the input's mean, so its error grows with noise."""
    inputs = 60 + rng.normal(0, noise[:, None, None], (n, 12, 3))
    targets = 60 + rng.normal(0, noise[:, None, None], (n, 6, 3))
    forecasts = np.repeat(inputs.mean(1, keepdims=True), 6, axis=1)
    return inputs, forecasts, targets


def test_the_estimate_follows_the_error_it_learned_and_its_interval_holds_its_value():
    rng = np.random.default_rng(0)
    fitted = FittedLoss.fit(*_windows(rng, 300, rng.uniform(0.5, 4.0, 300)), missing_value=None)
    calm, noisy = (fitted.estimate(*_windows(rng, 100, np.full(100, s))[:2]) for s in (1.0, 3.5))
    assert noisy["value"] > calm["value"] > 0
    for est in (calm, noisy):
        assert est["metric"] == "mae" and est["method"] == "dle-gbm" and est["higher_is_better"] is False
        assert est["low"] <= est["value"] <= est["high"]
        assert est["reference_high"] >= est["reference_value"] == fitted.reference_value


def test_an_error_shared_by_a_whole_day_widens_the_interval_by_the_spread_between_days():
    rng = np.random.default_rng(2)
    inputs, forecasts, targets = _windows(rng, 400, np.full(400, 2.0))
    days = np.repeat(np.arange(8), 50)
    offsets = rng.normal(0, 3.0, 8)
    shifted = targets + np.repeat(offsets, 50)[:, None, None]  # each day misses by its own offset
    plain, by_day = FittedLoss.fit(inputs, forecasts, targets, None, days), FittedLoss.fit(inputs, forecasts, shifted, None, days)
    assert len(by_day.day_residuals) == len(plain.day_residuals) == 8  # one out-of-fold error per validation day
    assert by_day.day_residuals.std(ddof=1) > 3 * plain.day_residuals.std(ddof=1)
    batch = _windows(rng, 50, np.full(50, 2.0))[:2]
    wide, narrow = by_day.estimate(*batch, samples=np.zeros(50, np.int64)), plain.estimate(*batch, samples=np.zeros(50, np.int64))
    assert wide["high"] - wide["low"] > 2 * (narrow["high"] - narrow["low"])
    lo, hi = by_day.day_interval(wide["value"])  # the t prediction interval of one more day's error
    assert wide["low"] <= max(lo, 0.0) and wide["high"] >= hi > wide["value"]
    with pytest.raises(InvalidInput, match="sample indices"):
        by_day.estimate(*batch, samples=np.zeros(3, np.int64))


def test_too_few_held_out_forecasts_are_refused():
    rng = np.random.default_rng(1)
    with pytest.raises(InvalidInput, match="at least 50"):
        FittedLoss.fit(*_windows(rng, 4, np.ones(4)), missing_value=None)
    with pytest.raises(InvalidInput, match="same windows"):
        loss_features(np.zeros((3, 12, 2)), np.zeros((2, 6, 2)))


def test_monitor_mirrors_its_rule_for_an_error_metric():
    est = {"metric": "mae", "value": 3.0, "low": 2.6, "high": 3.4, "higher_is_better": False,
           "reference_value": 2.0, "reference_high": 2.2}
    assert decide(False, est, 0.05) == "estimated drop"  # 2.6 - 2.2 >= 0.05 x 2.0: the error rose beyond doubt
    assert decide(False, {**est, "low": 2.25}, 0.05) is None  # 0.05 above the bound: less than 5 % of 2.0


def test_veml_drift_reports_a_forecasters_estimated_mae(tmp_path):
    root = tmp_path / "repo"
    repo = veml.init(root)
    for name, days, noise in (("traffic", 10, 1.0), ("later", 5, 4.0)):
        npz = write_npz(generate_traffic(n_sensors=4, n_steps=288 * days, seed=2, noise=noise), tmp_path / f"{name}.npz")
        repo.data.import_("timeseries", npz, name, role="test" if name == "later" else "train")
    repo.models.add("fc", {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
                           "parameters": {"history": 6, "horizon": 3, "hidden": 4, "layers": 1, "diffusion_steps": 1}})
    run = repo.training.train("traffic", "fc", sets={"epochs": 1, "batch_size": 32, "max_steps": 5})
    repo.inference.deploy(run["id"], "onnx", "none", name="fc-onnx")
    held, ids, split = repo.training.held_out(repo.training.get(run["id"]))
    _, _, _, preds = repo.inference.run("fc-onnx", held.id, data_ids=ids)
    inputs, missing = repo.inference.forecast_inputs("fc-onnx", held.id, data_ids=ids)
    by_hand = FittedLoss.fit(inputs, preds.forecasts, preds.forecast_targets, missing, preds.forecast_sample)
    _, _, _, later = repo.inference.run("fc-onnx", "later")
    expected = by_hand.estimate(repo.inference.forecast_inputs("fc-onnx", "later")[0], later.forecasts, later.forecast_sample)
    repo.close()

    out = ok("drift", "--inference", "fc-onnx", "--test", "later", "--repo", root)
    assert split == "validation"  # the estimate's calibration (the drift test itself needs more days than 2 held out)
    est = out["estimate"]
    assert est["metric"] == "mae" and est["method"] == "dle-gbm"
    assert est["value"] == pytest.approx(expected["value"]) and est["reference_value"] == pytest.approx(by_hand.reference_value)
    assert (est["low"], est["high"]) == pytest.approx((expected["low"], expected["high"]))
    assert est["low"] <= est["value"] <= est["high"]
