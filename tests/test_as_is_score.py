"""``as_is``: a stored lifecycle's model scored, unchanged, by its own metric on the target (issue 14, sensor series).

Real DCRNN forecasters trained on generated traffic networks and deployed to ONNX; the score is checked against the
deployment's masked MAE on the target computed through the public API, and ``veml similar`` / ``veml transfer``
rank forecasters' lifecycles by it when no method is named.
"""

from __future__ import annotations

import pytest

import veml
from conftest import ok
from veml.datasets import generate_traffic, write_npz
from veml.metrics import forecasting_report

FORECASTER = {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
              "parameters": {"history": 6, "horizon": 3, "hidden": 8, "layers": 1, "diffusion_steps": 1}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("as-is")
    repo = veml.init(base / "repo")
    nets = {"src-calm": dict(network="grid", n_sensors=4, noise=0.5), "src-heavy": dict(network="ring", n_sensors=4, demand=1.8, noise=4.0),
            "src-wide": dict(network="grid", n_sensors=6), "target": dict(network="grid", n_sensors=4, noise=0.5, demand=1.1)}
    for seed, (name, kw) in enumerate(nets.items()):
        npz = write_npz(generate_traffic(n_steps=288 * 6, seed=seed, **kw), base / f"{name}.npz")
        repo.data.import_("timeseries", npz, name)
    repo.models.add("forecaster", FORECASTER)
    for name in ("src-calm", "src-heavy", "src-wide"):
        run = repo.training.train(name, "forecaster", sets={"epochs": 1, "seed": 0}, name=f"train-{name}")
        repo.inference.deploy(run["id"], "onnx", "none", name=f"{name}-onnx")
    repo.close()
    return base / "repo"


def test_forecasters_lifecycles_are_ranked_by_their_own_error_on_the_target(root):
    out = ok("similar", "target", "--with-lifecycle", "--repo", root)
    assert out["method"] == "as_is"
    ranked = {r["name"]: r for r in out["ranking"]}
    assert set(ranked) == {"src-calm", "src-heavy"}  # the 6-sensor forecaster cannot run on 4 sensors
    assert [s["name"] for s in out["skipped"]] == ["src-wide"]
    with veml.open(root) as repo:
        for name, row in ranked.items():
            _, _, td, preds = repo.inference.run(f"{name}-onnx", "target")
            mae = forecasting_report(preds.forecast_targets, preds.forecasts, td.missing_value)["mae"]
            assert row["score"] == pytest.approx(-mae, rel=1e-6) and row["distance"] == pytest.approx(mae, rel=1e-6)
    distances = [r["distance"] for r in out["ranking"]]
    assert distances == sorted(distances)
    named = ok("similar", "target", "--method", "as_is", "--repo", root)  # a model score implies --with-lifecycle
    assert [r["name"] for r in named["ranking"]] == [r["name"] for r in out["ranking"]]
    data_only = ok("similar", "target", "--repo", root)  # ranking data versions alone keeps the series distance
    assert data_only["method"] == "gromov_wasserstein"


def test_transfer_without_a_source_starts_from_the_lifecycle_as_is_ranks_first(root):
    best = ok("similar", "target", "--with-lifecycle", "--repo", root)["ranking"][0]["name"]
    out = ok("transfer", "target", "--set", "epochs=1", "--repo", root)
    assert out["method"] == "as_is" and out["source_name"] == best
