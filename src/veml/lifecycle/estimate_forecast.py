"""Label-free error estimation for forecasters: direct loss estimation (DLE, as NannyML does it for regression).

A forecaster's batch is unlabelled until its future has happened.  On the training's validation split (series the
model never trained on, whose futures are known) a second model learns each forecast's absolute error from what is
known when the forecast is made: the input window and the forecast itself.  One row per (window, sensor):

* the forecast's mean gap to the last reading (a forecaster that departs far from persistence risks more), its gap
  at the first step, its range over the horizon and its level;
* the input's volatility (mean absolute step), spread, three-step trend and last reading;
* the share of the input the sensor did not report (the data's missing-value marker, or NaN).

On a new batch the estimated masked MAE is the mean predicted error over its rows.  The interval is the wider of
two:

* a percentile bootstrap over blocks of rows (one day of one sensor: a day's traffic moves its windows together, so
  rows are not independent): it resamples the batch's blocks and gives each a block of the validation split's
  out-of-fold residuals (the regressor's error on days it did not fit);
* a t prediction interval from the out-of-fold error of whole validation days (``day_residuals``: on each held-out
  day, its true MAE minus the regressor's estimate from the other days): ``value ± t(k - 1) · sd · sqrt(1 + 1/k)``
  over k days.  A batch's days share their conditions (an incident-free week, a wet one), so the batch's error is
  treated as one more day's rather than shrunk by its day count.  The first interval alone held the truth in 6 of
  10 unshifted batches on the benchmark: its day x sensor blocks were resampled independently, and the error of
  an estimate is mostly shared by all sensors of a day.  With few validation days the t quantile makes this
  interval wide (k = 3: 4.3 standard deviations); that width is what so few days can tell.

Like every label-free estimate it assumes that what makes a forecast
wrong on the validation split still does on the batch; ``BENCHMARKS.md`` (issue 15) measures how far that holds on
the generated traffic networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from veml.errors import InvalidInput

#: the fewest validation rows (window x sensor, with a known future) the loss model fits on
MIN_ROWS = 50
FOLDS = 5
FEATURES = ("gap_mean", "gap_first", "forecast_range", "forecast_level", "volatility", "spread", "trend", "last",
            "missing_share")


def _filled(inputs: np.ndarray, missing_value: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs with each gap carried forward from the last reading, NaN before a window's first reading; the
    missing mask) of (n, history, sensors)."""
    x = np.asarray(inputs, np.float64)
    miss = np.isnan(x) if missing_value is None else (np.isnan(x) | (x == missing_value))
    idx = np.where(~miss, np.arange(x.shape[1])[None, :, None], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(x, np.maximum(idx, 0), axis=1)
    filled[idx < 0] = np.nan
    return filled, miss


def loss_features(inputs: np.ndarray, forecasts: np.ndarray, missing_value: float | None = 0.0) -> np.ndarray:
    """One row per (window, sensor), in window-major order: the columns of :data:`FEATURES`."""
    inputs, forecasts = np.asarray(inputs, np.float64), np.asarray(forecasts, np.float64)
    if inputs.ndim != 3 or forecasts.ndim != 3 or len(inputs) != len(forecasts) or inputs.shape[2] != forecasts.shape[2]:
        raise InvalidInput(f"inputs {inputs.shape} and forecasts {forecasts.shape} are not (windows, steps, sensors) "
                           "of the same windows and sensors")
    filled, miss = _filled(inputs, missing_value)
    level = forecasts.mean(1)
    last = np.where(np.isnan(filled[:, -1]), level, filled[:, -1])
    filled = np.where(np.isnan(filled), last[:, None, :], filled)
    steps = np.abs(np.diff(filled, axis=1)).mean(1) if filled.shape[1] > 1 else np.zeros_like(last)
    back = min(3, filled.shape[1] - 1)
    cols = [np.abs(forecasts - last[:, None, :]).mean(1), np.abs(forecasts[:, 0] - last),
            forecasts.max(1) - forecasts.min(1), level, steps, filled.std(1),
            filled[:, -1] - filled[:, -1 - back], last, miss.mean(1)]
    return np.stack([c.reshape(-1) for c in cols], axis=1)


def window_errors(forecasts: np.ndarray, targets: np.ndarray, missing_value: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(mean absolute error over the horizon, count of known target steps) per (window, sensor), window-major."""
    f, y = np.asarray(forecasts, np.float64), np.asarray(targets, np.float64)
    valid = ~np.isnan(y) if missing_value is None else (~np.isnan(y) & (y != missing_value))
    err = np.where(valid, np.abs(np.nan_to_num(y) - f), 0.0).sum(1)
    count = valid.sum(1)
    return (err / np.maximum(count, 1)).reshape(-1), count.reshape(-1)


def _regressor(seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05, min_samples_leaf=20, random_state=seed)


def _blocks(samples: np.ndarray | None, n_windows: int, sensors: int) -> np.ndarray:
    """Each row's block: (the sample (day) its window came from, its sensor); one block per window without samples."""
    owner = np.arange(n_windows) if samples is None else np.asarray(samples, np.int64)
    if len(owner) != n_windows:
        raise InvalidInput(f"{len(owner)} sample indices for {n_windows} forecast windows")
    return (owner[:, None] * sensors + np.arange(sensors)[None, :]).reshape(-1)


def _block_means(values: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean of ``values`` per block, rows per block), blocks in sorted order."""
    _, inverse, sizes = np.unique(blocks, return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=values) / sizes, sizes


@dataclass(frozen=True)
class FittedLoss:
    """A direct loss estimator, fitted on the validation split's windows."""

    model: Any
    residuals: np.ndarray  # out-of-fold (true - predicted) error, mean per validation block (day x sensor)
    day_residuals: np.ndarray  # out-of-fold (true - estimated) masked MAE per validation day (a group of the folds)
    errors: np.ndarray  # the validation rows' true errors
    counts: np.ndarray  # their known target steps
    blocks: np.ndarray  # their blocks
    missing_value: float | None
    seed: int = 0

    @classmethod
    def fit(cls, inputs: np.ndarray, forecasts: np.ndarray, targets: np.ndarray, missing_value: float | None = 0.0,
            samples: np.ndarray | None = None, seed: int = 0) -> "FittedLoss":
        """Fit on held-out windows; ``samples`` (the forecasts' ``forecast_sample``) says which day each came from, so
        that out-of-fold errors are measured on days the regressor did not see and the interval resamples days."""
        from sklearn.model_selection import GroupKFold

        x = loss_features(inputs, forecasts, missing_value)
        err, count = window_errors(forecasts, targets, missing_value)
        blocks = _blocks(samples, len(forecasts), forecasts.shape[2])
        days = blocks // forecasts.shape[2]
        groups = days if len(np.unique(days)) >= 2 else np.repeat(np.arange(len(forecasts)), forecasts.shape[2])
        known = count > 0
        x, err, count, groups, blocks = x[known], err[known], count[known], groups[known], blocks[known]
        folds = min(FOLDS, len(np.unique(groups)))
        if len(err) < MIN_ROWS or folds < 2:
            raise InvalidInput(f"error estimation needs at least {MIN_ROWS} held-out (window, sensor) forecasts with "
                               f"a known future, got {len(err)}")
        oof = np.empty_like(err)
        for fit_rows, held in GroupKFold(folds).split(x, err, groups):
            oof[held] = _regressor(seed).fit(x[fit_rows], err[fit_rows]).predict(x[held])
        residuals, _ = _block_means(err - oof, blocks)
        day_total, _ = _block_means((err - oof) * count, groups)
        day_steps, _ = _block_means(count.astype(np.float64), groups)
        return cls(_regressor(seed).fit(x, err), residuals, day_total / day_steps, err, count, blocks, missing_value, seed)

    def day_interval(self, value: float, level: float = 0.95) -> tuple[float, float]:
        """``value`` ± the t prediction interval of one more validation day's out-of-fold error."""
        from scipy import stats

        k = len(self.day_residuals)
        half = float(stats.t.ppf((1 + level) / 2, k - 1) * self.day_residuals.std(ddof=1) * np.sqrt(1 + 1 / k))
        return value - half, value + half

    @property
    def reference_value(self) -> float:
        """The masked MAE on the validation split (every known target step weighs the same)."""
        return float((self.errors * self.counts).sum() / self.counts.sum())

    def reference_high(self, level: float = 0.95, bootstrap: int = 200) -> float:
        """The upper bound of the validation MAE, resampling its blocks (day x sensor)."""
        rng = np.random.default_rng(self.seed)
        total, _ = _block_means(self.errors * self.counts, self.blocks)
        steps, _ = _block_means(self.counts.astype(np.float64), self.blocks)
        boots = [total[i].sum() / max(steps[i].sum(), 1e-12) for i in (rng.integers(0, len(total), len(total))
                                                                       for _ in range(bootstrap))]
        return float(max(np.quantile(boots, (1 + level) / 2), self.reference_value))

    def estimate(self, inputs: np.ndarray, forecasts: np.ndarray, samples: np.ndarray | None = None,
                 level: float = 0.95, bootstrap: int = 200) -> dict[str, Any]:
        """``{"metric": "mae", "value", "low", "high", ...}`` for a batch's input windows and forecasts (``samples``:
        the day each window came from)."""
        x = loss_features(inputs, forecasts, self.missing_value)
        if not len(x):
            raise InvalidInput("error estimation needs at least one forecast window")
        pred = np.maximum(self.model.predict(x), 0.0)
        value = float(pred.mean())
        means, sizes = _block_means(pred, _blocks(samples, len(forecasts), forecasts.shape[2]))
        rng = np.random.default_rng(self.seed)
        k, m = len(means), len(self.residuals)
        boots = np.empty(bootstrap)
        for b in range(bootstrap):  # the batch's blocks resampled, each given a validation block's residual
            i = rng.integers(0, k, k)
            boots[b] = ((means[i] + self.residuals[rng.integers(0, m, k)]) * sizes[i]).sum() / sizes[i].sum()
        lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
        day_lo, day_hi = self.day_interval(value, level)
        lo, hi = min(lo, day_lo), max(hi, day_hi)
        return {"metric": "mae", "value": value, "low": float(max(0.0, min(lo, value))), "high": float(max(hi, value)),
                "level": level, "method": "dle-gbm", "higher_is_better": False,
                "reference_value": self.reference_value, "reference_high": self.reference_high(level),
                "reference_samples": len(self.errors)}
